"""Torch-free model runtime: onnxruntime + tokenizers + numpy, one module per task."""
