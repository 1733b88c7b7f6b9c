"""The lecture report (``imgcls report``): every number and claim of the two lectures beside
imgcls's own, as one markdown report (docs/report/README.md) with its numbers in results.json.

Experiments (``catalogue.EXPERIMENTS``), each trained with the lectures' protocol unless said:

- ``mlp-10``, ``mlp-32``: MLPs with 10 and 32 hidden units (lecture 002);
- ``mlp-128``: lecture 000's fully-connected net (128 hidden units);
- ``convnet``: lecture 002's CNN (conv 32, conv 64, pool, fc 128); ``fashion-convnet``: the
  same on Fashion-MNIST;
- ``lenet5``, ``lenet5-small``: LeNet-5 and LeNet5Small (lecture 000);
- ``convnet-pool2``: the CNN with a pool after each conv (more pooling, more invariance?);
- ``convnet-stride``: the CNN with stride-2 convs and no pool (lecture 000's strided conv);
- ``lenet5-20k``, ``mlp-128-20k``: LeNet-5 and MLP-128 on 20,000 images with a validation
  split (lecture 000's learning curves and training time);
- ``overfit-60000``, ``overfit-10000``, ``overfit-1000``, ``overfit-100``: MLP-10 on ever
  fewer images, the same number of Adam steps each (lecture 002's overfitting);
- ``resnet-bn``, ``resnet-lecture``: residual nets with He et al.'s block and with lecture
  002's eq. (6) block, on 20,000 images;
- ``lenet5-cosine``: LeNet-5 with lecture 002's alternative loss −fᵀy/‖f‖.

For each: test accuracy, accuracy on test images shifted 1/2/3 px in 8 directions,
parameters, multiply-adds and training time on this machine.

Modules, each importing only the ones above it:

- ``catalogue``: the experiments and the lectures' protocol (``lecture_spec``);
- ``results``: the data model (``ExperimentResult``, ``ReportData``, ``FIGURES``) and
  ``report_data_from_json``;
- ``claims``: every lecture claim judged from a ``ReportData``;
- ``studies``: the measurements beyond one row per model, and the figures;
- ``running``: ``build_report`` trains (or reuses) every experiment and gathers a
  ``ReportData``;
- ``render``: ``render_report`` turns a ``ReportData`` into markdown (tested on fixed
  numbers); ``write_report`` writes README.md and results.json.
"""

# The catalogue's names, which the docs cite as ``imgcls.insight.report.<NAME>``; light (no
# torch, no matplotlib), so that importing any module of the package stays cheap.
from imgcls.insight.report.catalogue import (
    EXPERIMENTS,
    LECTURE_EPOCHS,
    LECTURE_PROTOCOL,
    Experiment,
    lecture_spec,
)

__all__ = ["EXPERIMENTS", "LECTURE_EPOCHS", "LECTURE_PROTOCOL", "Experiment", "lecture_spec"]
