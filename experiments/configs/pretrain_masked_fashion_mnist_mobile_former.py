# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
r"""Masked-FINOLA pre-training of a small Mobile-Former on Fashion-MNIST.

The recipe of configs/pretrain_masked_fashion_mnist.py (32×32, C=128, the
8×8 map at stride 4, 400 steps of 32) with SIZE instead of the ResNet:
the visible 16×16 quadrant is encoded at feature stride 4 (the small-image
option of ``finola_jax.models.mobile_former``: the stem and the first
downsampling blocks keep their resolution), its 4×4 map projected to C and
extrapolated. configs/probe_fashion_mnist.py probes it unchanged:

  python3 -m experiments.pretrain_masked --workdir=/tmp/fmnist_masked_mf \
    --config=experiments/configs/pretrain_masked_fashion_mnist_mobile_former.py
  python3 -m experiments.linear_probe --workdir=/tmp/fmnist_probe_mf \
    --config=experiments/configs/probe_fashion_mnist.py \
    --pretrained_workdir=/tmp/fmnist_masked_mf --config.protocol=tran1
"""

import ml_collections

from experiments.configs import pretrain_masked_fashion_mnist

SIZE = "mobile_former_26m"


def get_config() -> ml_collections.ConfigDict:
  """pretrain_masked_fashion_mnist's config with a small Mobile-Former."""
  config = pretrain_masked_fashion_mnist.get_config()
  config.encoder = SIZE
  return config
