"""An ensemble as one ONNX graph: several checkpoints of the same data set folded into one
net (``EnsembleNet``) that averages the members' softmax probabilities, with optional
test-time augmentation inside the graph (``TTA``: ``hflip`` averages each member's answer on
the image and on its mirror image).

Decision: the graph keeps the contract of a single export, ``pixels -> (logits,
probabilities)``. Its ``logits`` are the log of the averaged probabilities,
``logsumexp_i(log_softmax(z_i)) - log(n)`` over the n (member, view) pairs, so that the
softmax of them gives the average back exactly and no probability underflows to log(0).
Every member gets the same weight; every view of a member too.

``check_members`` refuses members that do not take the same images or answer in the same
classes: the data set, the class names, the input shape, the normalisation (and, for a folder
of images, its root and framing) must agree. Members may be different nets; one file given
twice is refused (it would weigh double).

References: Lakshminarayanan et al. 2017, "Simple and scalable predictive uncertainty
estimation using deep ensembles" (averaged probabilities).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from imgcls.errors import ConfigError

__all__ = [
    "COMBINE",
    "LOGITS",
    "TTA",
    "EnsembleNet",
    "check_members",
    "check_tta",
    "ensemble_reference",
    "member_prefix",
]

TTA = ("hflip",)  # the test-time augmentations the graph can hold
COMBINE = "mean of the softmax probabilities over every member and view, equal weights"
LOGITS = "log of the averaged probabilities: softmax(logits) is the average"
# Data sets whose images mean something else mirrored: a mirrored 2, 3, 4, 5, 7 is no digit.
NO_HFLIP = ("mnist",)


def member_prefix(k: int) -> str:
    """The name of member ``k``'s modules inside ``EnsembleNet`` (``members.0.``): its
    parameters are ``net.members.0.<layer>.weight`` in the ONNX graph."""
    return f"members.{k}."


class EnsembleNet(nn.Module):
    """Normalised images (N, C, H, W) -> (N, K) log of the members' averaged probabilities.

    ``members`` are plain nets (normalised images -> logits); ``tta`` names the extra views
    (``hflip``) each member also sees. The identity view runs first, so a forward hook on a
    member's layer sees the image itself first.
    """

    def __init__(self, members: Sequence[nn.Module], tta: Sequence[str] = ()) -> None:
        super().__init__()
        if not members:
            raise ConfigError("an ensemble needs at least one checkpoint")
        unknown = [t for t in tta if t not in TTA]
        if unknown:
            raise ConfigError(f"--tta {unknown[0]}: unknown; offered: {', '.join(TTA)}")
        self.members = nn.ModuleList(members)
        self.views = ("identity", *tta)

    def _view(self, x: torch.Tensor, view: str) -> torch.Tensor:
        if view == "hflip":
            return torch.flip(x, dims=(3,))  # (N, C, H, W): the width axis
        return x

    def member_log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """(M, V, N, K): each member's log-softmax on each view of ``x``."""
        views = [self._view(x, v) for v in self.views]
        return torch.stack(
            [torch.stack([F.log_softmax(m(v), dim=1) for v in views]) for m in self.members]
        )

    @staticmethod
    def combine(log_probs: torch.Tensor) -> torch.Tensor:
        """(M, V, N, K) log-probabilities -> (N, K) log of their mean probability."""
        flat = log_probs.flatten(0, 1)
        return torch.logsumexp(flat, dim=0) - math.log(flat.shape[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.combine(self.member_log_probs(x))


def ensemble_reference(
    net: EnsembleNet, images: torch.Tensor, mean: float, std: float, batch_size: int = 1000
) -> tuple[np.ndarray, np.ndarray]:
    """The PyTorch ensemble on uint8 images (N, C, H, W), the way training evaluates them:
    its logits (N, K) (``EnsembleNet.forward``, computed as ``combine`` of the members'
    log-probabilities) and each member's own log-probabilities on the unaugmented images
    (M, N, K), from the same pass."""
    from imgcls.data.transforms import normalize

    ensemble, own = [], []
    with torch.inference_mode():
        for i in range(0, len(images), batch_size):
            lp = net.member_log_probs(normalize(images[i : i + batch_size], mean, std))
            ensemble.append(net.combine(lp).float().numpy())
            own.append(lp[:, 0].float().numpy())
    return np.concatenate(ensemble), np.concatenate(own, axis=1)


def _signature(model: Any, ckpt: dict[str, Any]) -> dict[str, Any]:
    """What members must share: the images they take and the classes they answer in."""
    hp = model.hparams
    sig: dict[str, Any] = {
        "data set": hp.dataset,
        "classes": list(model.class_names),
        "input shape": (int(hp.in_channels), int(hp.image_size), int(hp.image_size)),
        "normalisation (mean, std)": (float(hp.mean), float(hp.std)),
    }
    if hp.dataset == "folder":
        dm = ckpt.get("datamodule_hyper_parameters") or {}
        sig["image folder"] = str(dm.get("root"))
        sig["framing"] = str(dm.get("framing") or "auto")
    return sig


def check_members(
    paths: Sequence[str | os.PathLike[str]],
    models: Sequence[Any],
    ckpts: Sequence[dict[str, Any]],
) -> None:
    """Refuse members that differ in data set, classes, input shape or normalisation (or,
    for a folder of images, its root or framing) from the first, in one line naming it.

    Raises:
        ConfigError: the first difference found, or a checkpoint given twice (it would
            count twice in the average).
    """
    seen: dict[str, str | os.PathLike[str]] = {}
    for path in paths:
        key = os.path.realpath(path)
        if key in seen:
            raise ConfigError(
                f"--ckpt {path}: the same checkpoint as --ckpt {seen[key]}; each member counts "
                "once in the average: pass it once"
            )
        seen[key] = path
    first = _signature(models[0], ckpts[0])
    for path, model, ckpt in zip(paths[1:], models[1:], ckpts[1:], strict=True):
        sig = _signature(model, ckpt)
        for what, value in first.items():
            if sig.get(what) != value:
                raise ConfigError(
                    f"--ckpt {path}: its {what} is {_show(sig.get(what))}, the first member's "
                    f"({paths[0]}) {_show(value)}; the members of an ensemble must share the "
                    "data set, classes, input size and normalisation"
                )


def _show(value: Any) -> str:
    text = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_tta(tta: Sequence[str], dataset: str) -> None:
    """Refuse a test-time augmentation the graph does not offer, or one that makes no sense
    for ``dataset`` (a mirrored digit is another digit or none).

    Raises:
        ConfigError: an unknown name, or ``hflip`` for MNIST.
    """
    for t in tta:
        if t not in TTA:
            raise ConfigError(f"--tta {t}: unknown; offered: {', '.join(TTA)}")
        if t == "hflip" and dataset in NO_HFLIP:
            raise ConfigError(
                f"--tta hflip: not for {dataset}: a mirrored digit is another digit or none; "
                "drop --tta (hflip is for Fashion-MNIST)"
            )
