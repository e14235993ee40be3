"""The int8 CPU inference path: `model.quantize("int8")` / `from_pretrained(..., quantization="int8")`.

kernels/int8.py holds the layer and its oneDNN kernel call; convert.py turns a model's encoder linears into it
(and calibrates static activation scales); hooks.py is what the model classes take from here (`quantize`, the
steps of `from_pretrained`). The package sits below modeling/ and imports nothing from it: blocks.py finds the
encoder blocks by the marker their class declares.
"""

from ..kernels.int8 import Int8Linear, int8_linear

__all__ = ["Int8Linear", "int8_linear"]
