"""Lecture 002's back propagation (Theorem 1) against torch.autograd, in float64."""

from __future__ import annotations

import pytest
import torch

from imgcls.insight import backprop
from imgcls.insight.backprop import check_against_autograd, lecture_gradients, random_net

ACTIVATIONS = ["relu", "sigmoid", "tanh"]
FIGURE_1 = (6, 2, 6, 4, 3)  # n_0 = 6, hidden 2, 6, 4; three classes out


def _worst(report: dict[str, dict[str, float]]) -> tuple[float, float]:
    return max(v["abs"] for v in report.values()), max(v["rel"] for v in report.values())


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_theorem_1_is_what_autograd_computes(activation, seed):
    report = check_against_autograd(seed=seed, activation=activation)
    assert sorted(report) == ["W1", "W2", "W3", "W4", "b1", "b2", "b3", "b4"]
    worst_abs, worst_rel = _worst(report)
    assert worst_abs < 1e-10 and worst_rel < 1e-10, report


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_dropping_d_in_eq_4_is_caught(activation, monkeypatch):
    # ∂L/∂z_{k-1} = W_kᵀ ∂L/∂z_k, without D_{k-1}: wrong wherever σ' ≠ 1.
    monkeypatch.setattr(backprop, "backward_step", lambda d_prev, w, dz: w.T @ dz)
    worst_abs, worst_rel = _worst(check_against_autograd(activation=activation))
    assert worst_abs > 0.1 and worst_rel > 0.1


def test_forgetting_the_softmax_is_caught(monkeypatch):
    # ∂L/∂z_L = −y, as if the loss were −yᵀ z_L without the soft-max's log-sum-exp.
    monkeypatch.setattr(backprop, "output_gradient", lambda z, y: -y)
    assert _worst(check_against_autograd(activation="tanh"))[0] > 0.1


def test_transposing_w_in_eq_4_cannot_even_run():
    # On Figure 1's widths no W_k is square, so a transposed W_k does not fit ∂L/∂z_k at all.
    weights, biases = random_net(FIGURE_1, torch.Generator().manual_seed(0))
    dz = torch.ones(FIGURE_1[2], 1, dtype=torch.float64)
    d_prev = torch.eye(FIGURE_1[1], dtype=torch.float64)
    assert backprop.backward_step(d_prev, weights[1], dz).shape == (FIGURE_1[1], 1)
    with pytest.raises(RuntimeError):
        d_prev @ weights[1] @ dz


def test_shapes_and_batch_is_the_sum_of_samples():
    weights, biases = random_net(FIGURE_1, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(4)
    x = torch.randn(4, 6, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 2, 1, 2])
    gw, gb = lecture_gradients(weights, biases, x, labels, "sigmoid")
    assert [tuple(w.shape) for w in gw] == [(2, 6), (6, 2), (4, 6), (3, 4)]
    assert [tuple(b.shape) for b in gb] == [(2,), (6,), (4,), (3,)]
    assert all(w.dtype == torch.float64 for w in gw + gb)
    # One input at a time, with one-hot targets, adds up to the batch (eq. 2 sums the loss).
    singles = [
        lecture_gradients(
            weights, biases, xi, torch.nn.functional.one_hot(yi, 3).double(), "sigmoid"
        )
        for xi, yi in zip(x, labels, strict=True)
    ]
    for k in range(4):
        assert torch.allclose(sum(s[0][k] for s in singles), gw[k], rtol=0, atol=1e-14)
        assert torch.allclose(sum(s[1][k] for s in singles), gb[k], rtol=0, atol=1e-14)
    # ∂L/∂b_L sums p − y over the batch: each p and each y sums to 1, so it sums to 0.
    assert abs(float(gb[-1].sum())) < 1e-14


def test_unknown_activation_and_mismatched_layers():
    weights, biases = random_net((2, 3, 2), torch.Generator().manual_seed(0))
    x, y = torch.zeros(2, dtype=torch.float64), torch.tensor(1)
    with pytest.raises(ValueError, match="activation"):
        lecture_gradients(weights, biases, x, y, "gelu")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="bias"):
        lecture_gradients(weights, biases[:1], x, y)
