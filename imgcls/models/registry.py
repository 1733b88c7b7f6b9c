"""A tiny model registry, after torchvision's ``models/_api.py``.

``@register_model`` fills a dict (a duplicate name is an error); ``create_model(name, **kw)``
builds one and an unknown name fails with the list of valid ones.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

from imgcls.errors import ConfigError

__all__ = ["create_model", "list_models", "model_entrypoint", "register_model"]

_MODELS: dict[str, Callable[..., nn.Module]] = {}
F = TypeVar("F", bound=Callable[..., nn.Module])


def register_model(name: str) -> Callable[[F], F]:
    def wrap(fn: F) -> F:
        if name in _MODELS:
            raise ValueError(f"a model named {name!r} is already registered")
        _MODELS[name] = fn
        return fn

    return wrap


def list_models() -> list[str]:
    return sorted(_MODELS)


def model_entrypoint(name: str) -> Callable[..., nn.Module]:
    try:
        return _MODELS[name]
    except KeyError:
        raise ConfigError(
            f"unknown net {name!r}; valid names: {', '.join(list_models())}"
        ) from None


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered net ``name``.

    Raises:
        ValueError: unknown name (the message lists the valid ones) or an argument the net
            does not take (the message lists those it does).
    """
    fn = model_entrypoint(name)
    params = inspect.signature(fn).parameters
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise ConfigError(f"net {name!r} takes no argument(s) {unknown}; it takes {sorted(params)}")
    return fn(**kwargs)
