"""How the math runs on this machine: GEMM choice (int8, oneDNN-packed, plain), attention kernels, CPU streams.

Below modeling/ (which calls into it, and whose models take `set_weight_packing` / `compile` from switches.py)
and above the I/O modules; it imports nothing from modeling/ or quantization/.
"""
