"""Insight: what the lectures claim about CNNs, made runnable.

It evaluates and plots the nets that ``imgcls.training`` trains on the data of ``imgcls.data``.
One module per question:

- ``shift``: how accuracy falls when test images are translated (translation invariance);
- ``kernels``: the lectures' hand-made filters and their cross-correlation with an image;
- ``cost``: output sizes, parameters and multiply-adds per layer (few parameters, local features);
- ``probe``: what a trained net computes (filters, feature maps, penultimate layer, errors);
- ``figures``: matplotlib figures of all of the above, at fixed pixel sizes;
- ``training`` / ``sweep``: in-process Lightning training, accuracy against training-set size;
- ``backprop``: lecture 002's backpropagation equations with explicit matrices, against autograd;
- ``toy``: lecture 002's two-rings problem and its decision boundary as training goes on;
- ``report`` (a package: catalogue, results, claims, studies, running, render): the lectures'
  experiments, reproduced, as one markdown report, with a verdict on every testable claim;
  ``methods``: what produced each of its rows, read from the checkpoint and its config;
- ``lectures``: the numbers the lectures report, to put beside ours.

Submodules are imported on demand (``imgcls summary`` needs neither matplotlib nor Lightning).
"""

from __future__ import annotations

from imgcls.errors import InsightError

__all__ = ["InsightError"]
