"""Export to ONNX: `export_onnx(model_or_path, out_dir, tower=, dtype=, opset=)` and `siglip export`.

Importing this package is light: onnx and onnxruntime are imported only when an export runs.
"""

from .onnx import DTYPES, TOWERS, ExportedFile, export_onnx

__all__ = ["DTYPES", "TOWERS", "ExportedFile", "export_onnx"]
