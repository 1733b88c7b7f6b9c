"""imgcls: CNN and MLP image classifiers for MNIST / Fashion-MNIST, trained with Lightning,
shipped as verified ONNX models."""

__version__ = "0.1.0"
