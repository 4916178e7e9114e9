# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
r"""Masked-FINOLA pre-training of a small Mobile-Former on Fashion-MNIST.

The recipe of configs/pretrain_masked_fashion_mnist.py (32×32, C=128, the
8×8 map at stride 4, 400 steps of 32) with a Mobile-Former (SIZE) instead of
the ResNet: the visible 16×16 quadrant is encoded at feature stride 4 (the
small-image option of ``finola_jax.models.mobile_former``: the stem and the
first downsampling blocks keep their resolution), its 4×4 map projected to
C and extrapolated. configs/probe_fashion_mnist.py probes it unchanged.

Why the 52M size: it is the smallest size without grouped pointwise
convolutions, which XLA's CPU backend runs slowly. Its encoder (1.72 M
parameters without the published classifier head; 16.8 M multiply-adds on
a 16×16 quadrant by XLA's cost analysis) trains at 64 images/s on two
loaded CPU cores, the ResNet recipe (0.32 M, 4.5 M) at 219
(experiments.bench_train): 400 steps take about 7 CPU-minutes. Probing it
is slower than pre-training: the probes encode all 60,000 images at
32×32, and tran1's transformer block reads 576-channel tokens (about 50
CPU-minutes for its 2,000 steps; docs/experiments.md#encoders):

  python3 -m experiments.pretrain_masked --workdir=/tmp/fmnist_masked_mf \
    --config=experiments/configs/pretrain_masked_fashion_mnist_mobile_former.py
  python3 -m experiments.linear_probe --workdir=/tmp/fmnist_probe_mf \
    --config=experiments/configs/probe_fashion_mnist.py \
    --pretrained_workdir=/tmp/fmnist_masked_mf --config.protocol=tran1
"""

import ml_collections

from experiments.configs import pretrain_masked_fashion_mnist

SIZE = "mobile_former_52m"


def get_config() -> ml_collections.ConfigDict:
  """pretrain_masked_fashion_mnist's config with a small Mobile-Former."""
  config = pretrain_masked_fashion_mnist.get_config()
  config.encoder = SIZE
  return config
