"""One module per task: its parameters schema, pre/post-processing and ONNX Runtime calls."""
