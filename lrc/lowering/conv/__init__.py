"""The convolution lowering for time-invariant specs: plan.py reads the convolutions,
gen.py and kernels.py generate their kernels (Vandermonde, Cauchy), fft.py convolves,
params.py runs Param expressions, program.py and run.py are the Program and one call."""
