"""The nets: plain ``nn.Module``s behind a registry (no Lightning import here)."""

from imgcls.models import convnet, lenet, mlp, resnet  # noqa: F401  (registers the nets)
from imgcls.models.layers import Net, conv_output_size
from imgcls.models.registry import create_model, list_models, model_entrypoint, register_model
from imgcls.models.taps import conv_layers, feature_taps

__all__ = [
    "Net",
    "conv_layers",
    "conv_output_size",
    "create_model",
    "feature_taps",
    "list_models",
    "model_entrypoint",
    "register_model",
]
