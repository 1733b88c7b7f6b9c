"""The nets: plain ``nn.Module``s behind a registry (no Lightning import here)."""

from imgcls.models import convnet, lenet, mlp, resnet  # noqa: F401  (registers the nets)
from imgcls.models.layers import Net, conv_output_size
from imgcls.models.registry import create_model, list_models, model_entrypoint, register_model

__all__ = [
    "Net",
    "conv_output_size",
    "create_model",
    "list_models",
    "model_entrypoint",
    "register_model",
]
