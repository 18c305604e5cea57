"""Exporting a searched config: its config file and its standalone network as TorchScript, ``torch.export`` or ONNX.

:mod:`.formats` writes and checks the model files; :mod:`.from_search` takes a config out of a SEARCH and writes it.
"""

from .formats import (ONNX_PACKAGES, ExportCheck, export_onnx, export_program, export_torchscript, onnx_bytes,
                      require_onnx, torchscript_bytes)
from .from_search import ExportResult, calibrated_static, export_search, search_config, search_run_dir

__all__ = ["ExportCheck", "export_torchscript", "export_program", "export_onnx", "torchscript_bytes", "onnx_bytes",
           "require_onnx", "ONNX_PACKAGES",
           "search_run_dir", "search_config", "calibrated_static", "ExportResult", "export_search"]
