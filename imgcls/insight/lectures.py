"""The numbers the lectures report, so that every table can put ours beside them.

Sources (``shared/lectures``):

- lecture 000: K. McAlister, QTM 447 lecture 12, "Image Classification" (2025);
- lecture 002: J. Calder, Math 5467, "Convolutional Neural Networks and Classification".

Accuracies are percentages on the official 10,000-image test set; shift lists are for
0, 1, 2, 3 pixels (lecture 002 does not say in which direction it shifted).
"""

from __future__ import annotations

# Lecture 002, "MNIST": 2-layer nets trained on the 60,000 training images.
MLP10_ACC = 93.0
MLP32_ACC = 97.0
MLP32_SHIFT = (97.0, 87.0, 62.0)  # 0, 1, 2 px

# Lecture 002, "MNIST Accuracy": conv 32 – conv 64 – max-pool – fc 128, 14 epochs.
CNN_MNIST_SHIFT = (99.04, 98.07, 92.06, 75.0)  # 0, 1, 2, 3 px
# Lecture 002, "FashionMNIST accuracy": the same net, 14 epochs.
CNN_FASHION_SHIFT = (92.55, 89.73, 75.94, 47.38)

# Lecture 000: LeNet-5 on a subsample of 20,000 images "takes around 20 seconds to train".
LENET5_20K_SECONDS = 20.0
LENET5_20K_IMAGES = 20_000

# Lecture 000's worked examples (reproduced exactly by ``imgcls.insight.cost`` / ``kernels``).
CONV1D_EXAMPLE = ((1, 2, 3, 4, 5, 6), (1, 2), (5, 8, 11, 14, 17))
MAXPOOL_EXAMPLE = (((1, 2, 3), (4, 5, 6), (7, 8, 9)), ((5, 6), (8, 9)))
LENET_SMALL_CONV_WEIGHTS = 150  # 6 filters of 5×5
FC6_ON_28x28_WEIGHTS = 4_704  # 6 hidden units on 784 pixels
RGB_CONV_MACS = 768_000  # 10 filters of 5×5×3, same padding, on 32×32×3
RGB_CONV_WEIGHTS, RGB_CONV_BIASES = 750, 10
RGB_FEATURES = 2_352  # a 28×28×3 image, flattened
RGB_FC128_WEIGHTS = 301_056  # "the first layer with 128 hidden units would estimate 301 thousand"
RGB_FILTER_WEIGHTS = 75  # one 5×5×3 filter


def shift_references(dataset: str) -> dict[str, tuple[float, ...]]:
    """Lecture shift-accuracy curves (percent, from 0 px) for ``dataset``; empty if none."""
    if dataset == "mnist":
        return {"lecture CNN": CNN_MNIST_SHIFT, "lecture MLP-32": MLP32_SHIFT}
    if dataset == "fashion_mnist":
        return {"lecture CNN": CNN_FASHION_SHIFT}
    return {}
