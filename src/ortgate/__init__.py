"""ortgate: gate ONNX Runtime variants of a text classifier on accuracy and speed, in pytest."""

from ortgate.errors import OrtgateError

__all__ = ["OrtgateError", "__version__"]
__version__ = "0.1.0"
