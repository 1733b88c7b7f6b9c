"""Back propagation as lecture 002 derives it (Theorem 1), with explicit matrices.

For a fully-connected net ``f_k = σ_k(W_k f_{k-1} + b_k)``, ``k = 1..L``, write
``z_k = W_k f_{k-1} + b_k`` (eq. 3) and ``D_k = diag(σ'_k(z_k))``. Then

- (4) ``∂L/∂z_{k-1} = D_{k-1} W_kᵀ ∂L/∂z_k``,
- (5) ``∂L/∂W_k = ∂L/∂z_k f_{k-1}ᵀ`` and ``∂L/∂b_k = ∂L/∂z_k``.

The last layer's σ_L is the identity, so ``f_L = z_L`` are the logits, and the loss is the
negative log-likelihood of their soft-max (eq. 7), whose gradient is ``∂L/∂z_L = p − y``.

Everything here is float64 column-vector algebra, one sample at a time, without autograd: the
point is to show that these three equations *are* what ``loss.backward()`` computes.
``check_against_autograd`` measures how far apart the two are (round-off, ~1e-16 relative).
Each equation lives in its own small function so that a test can swap in a wrong one and see
the check fail.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch

__all__ = [
    "Activation",
    "check_against_autograd",
    "lecture_gradients",
    "random_net",
]

Activation = Literal["relu", "sigmoid", "tanh"]


def _sigma(
    activation: Activation,
) -> tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]:
    """σ and its derivative σ' (elementwise)."""
    if activation == "relu":
        # σ'(0) := 0, as torch's relu backward does; z is never exactly 0 for random floats.
        return torch.relu, lambda z: (z > 0).to(z.dtype)
    if activation == "sigmoid":
        return torch.sigmoid, lambda z: torch.sigmoid(z) * (1 - torch.sigmoid(z))
    if activation == "tanh":
        return torch.tanh, lambda z: 1 - torch.tanh(z) ** 2
    raise ValueError(f"activation must be 'relu', 'sigmoid' or 'tanh', got {activation!r}")


def output_gradient(z_last: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """∂L/∂z_L = p − y for L = −yᵀ log softmax(z_L) (eq. 7), p = softmax(z_L)."""
    return torch.softmax(z_last, dim=0) - y


def backward_step(d_prev: torch.Tensor, w: torch.Tensor, dz: torch.Tensor) -> torch.Tensor:
    """Eq. (4): ∂L/∂z_{k-1} = D_{k-1} W_kᵀ ∂L/∂z_k."""
    return d_prev @ w.T @ dz


def weight_gradient(dz: torch.Tensor, f_prev: torch.Tensor) -> torch.Tensor:
    """Eq. (5): ∂L/∂W_k = ∂L/∂z_k f_{k-1}ᵀ (an outer product, n_k × n_{k-1})."""
    return dz @ f_prev.T


def _one_sample(
    weights: Sequence[torch.Tensor],
    biases: Sequence[torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    activation: Activation,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    sigma, dsigma = _sigma(activation)
    n_layers = len(weights)
    # Forward pass, eq. (3) and (1), keeping every z_k and f_k as a column vector.
    fs = [x.reshape(-1, 1)]  # f_0 = x
    zs: list[torch.Tensor] = []
    for k, (w, b) in enumerate(zip(weights, biases, strict=True), start=1):
        z = w @ fs[-1] + b.reshape(-1, 1)
        zs.append(z)
        fs.append(z if k == n_layers else sigma(z))  # σ_L is the identity
    # Backward pass: from ∂L/∂z_L down to ∂L/∂z_1 by eq. (4), collecting eq. (5) on the way.
    dz = output_gradient(zs[-1].flatten(), y.reshape(-1)).reshape(-1, 1)
    grad_w: list[torch.Tensor] = [torch.empty(0)] * n_layers
    grad_b: list[torch.Tensor] = [torch.empty(0)] * n_layers
    for k in range(n_layers, 0, -1):  # lecture indices: W_k is weights[k - 1]
        grad_w[k - 1] = weight_gradient(dz, fs[k - 1])
        grad_b[k - 1] = dz.flatten()
        if k > 1:
            d_prev = torch.diag(dsigma(zs[k - 2]).flatten())  # D_{k-1}
            dz = backward_step(d_prev, weights[k - 1], dz)
    return grad_w, grad_b


def lecture_gradients(
    weights: Sequence[torch.Tensor],
    biases: Sequence[torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    activation: Activation = "relu",
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """∂L/∂W_k and ∂L/∂b_k, k = 1..L, by Theorem 1, for one input or a batch.

    Args:
        weights: W_1..W_L, W_k of shape (n_k, n_{k-1}).
        biases: b_1..b_L, b_k of shape (n_k,).
        x: one input (n_0,) or a batch (m, n_0).
        y: one-hot labels (n_L,) / (m, n_L), or class indices () / (m,).
        activation: σ_1..σ_{L-1}; σ_L is the identity (the logits go to the soft-max loss).

    Returns:
        (grads of W_1..W_L, grads of b_1..b_L), shaped like the parameters. For a batch the
        loss is the sum over samples (eq. 2), so the gradients are the per-sample sums.
    """
    if len(weights) != len(biases) or not weights:
        raise ValueError(f"{len(weights)} weight matrices for {len(biases)} bias vectors")
    n_out = weights[-1].shape[0]
    batch = x.reshape(1, -1) if x.dim() == 1 else x
    if y.is_floating_point():
        targets = y.reshape(len(batch), n_out).to(batch.dtype)
    else:  # class indices -> one-hot vectors e_j
        targets = torch.nn.functional.one_hot(y.reshape(len(batch)), n_out).to(batch.dtype)
    total_w = [torch.zeros_like(w) for w in weights]
    total_b = [torch.zeros_like(b) for b in biases]
    for xi, yi in zip(batch, targets, strict=True):
        gw, gb = _one_sample(weights, biases, xi, yi, activation)
        for k in range(len(weights)):
            total_w[k] += gw[k]
            total_b[k] += gb[k]
    return total_w, total_b


def random_net(
    sizes: Sequence[int], generator: torch.Generator
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Float64 W_k (n_k, n_{k-1}) and b_k (n_k,) for layer widths ``sizes`` = (n_0, ..., n_L),
    scaled like PyTorch's default init (1/√n_{k-1}) so activations neither vanish nor blow up."""
    weights, biases = [], []
    for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
        scale = n_in**-0.5
        weights.append(torch.randn(n_out, n_in, generator=generator, dtype=torch.float64) * scale)
        biases.append(torch.randn(n_out, generator=generator, dtype=torch.float64) * scale)
    return weights, biases


def _autograd_gradients(
    weights: Sequence[torch.Tensor],
    biases: Sequence[torch.Tensor],
    x: torch.Tensor,
    labels: torch.Tensor,
    activation: Activation,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The same gradients the way a training loop gets them: batched forward, ``backward()``."""
    sigma, _ = _sigma(activation)
    ws = [w.detach().clone().requires_grad_(True) for w in weights]
    bs = [b.detach().clone().requires_grad_(True) for b in biases]
    f = x
    for k, (w, b) in enumerate(zip(ws, bs, strict=True), start=1):
        z = f @ w.T + b
        f = z if k == len(ws) else sigma(z)
    loss = torch.nn.functional.cross_entropy(f, labels, reduction="sum")  # eq. (7), eq. (2)
    loss.backward()
    return [w.grad for w in ws], [b.grad for b in bs]  # type: ignore[misc]


def check_against_autograd(
    seed: int = 0,
    sizes: Sequence[int] = (6, 2, 6, 4, 3),
    batch: int = 5,
    activation: Activation = "relu",
) -> dict[str, dict[str, float]]:
    """Theorem 1 against ``torch.autograd`` on a random net and batch.

    The default widths are the lecture's Figure 1 (n_0 = 6 inputs, hidden 2, 6 and 4) with 3
    classes out.

    Returns:
        ``{"W1": {"abs": ..., "rel": ...}, "b1": {...}, ..., "WL": ..., "bL": ...}``: the
        largest absolute difference of each gradient, and that divided by the largest entry of
        autograd's gradient (so "rel" does not blow up on a single near-zero entry).
    """
    g = torch.Generator().manual_seed(seed)
    weights, biases = random_net(sizes, g)
    x = torch.randn(batch, sizes[0], generator=g, dtype=torch.float64)
    labels = torch.randint(0, sizes[-1], (batch,), generator=g)
    ours_w, ours_b = lecture_gradients(weights, biases, x, labels, activation)
    ref_w, ref_b = _autograd_gradients(weights, biases, x, labels, activation)
    out: dict[str, dict[str, float]] = {}
    for name, ours, ref in (("W", ours_w, ref_w), ("b", ours_b, ref_b)):
        for k, (a, r) in enumerate(zip(ours, ref, strict=True), start=1):
            if a.shape != r.shape:
                raise ValueError(f"{name}{k}: shape {tuple(a.shape)} vs autograd {tuple(r.shape)}")
            diff = float((a - r).abs().max())
            out[f"{name}{k}"] = {"abs": diff, "rel": diff / max(float(r.abs().max()), 1e-300)}
    return out
