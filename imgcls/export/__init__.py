"""The export stage: a trained checkpoint becomes a verified ONNX folder (and, on request, a
Triton model repository)."""
