"""The scan lowering: chunked associative scans in registers for diagonal transitions, a
one-token loop for any other linear transition, and the decode step every spec has.

    program.py   ScanProgram: partition, tiling, the kernels' graphs and sources
    forward.py, body.py, backward.py, unrolled.py, loop.py   the kernel emitters
    launch.py, autograd.py, replay.py, call.py               running them
    configs.py, tune.py                                      launch configs and their choice
"""
