"""The chunked lowering: tensor-core chunks for diagonal decays that are constant along some
state dims (Mamba-2, RetNet, GLA, RWKV-6): form.py reads the spec's chunked form, emit.py,
backward.py and states.py write the kernels, launch.py runs them, tune.py holds the configs."""
