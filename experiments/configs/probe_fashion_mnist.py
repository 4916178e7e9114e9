# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
r"""Probing on Fashion-MNIST (configs/pretrain_masked_fashion_mnist.py's data).

Trains on the 50,000 training images of the IDX directory and scores on its
``t10k-*`` files or, without them, the held-out sixth of ``train-*``
(10,000 images never trained on, not even in pre-training). The linear
readout pools the 8×8×128 map to 4×4 (2,048 features), chosen on a
development split (notes/probe_fashion_mnist.md). Commands and the table:
README.md, "Probing on Fashion-MNIST".

  python3 -m experiments.linear_probe --workdir=/tmp/fmnist_probe \
    --config=experiments/configs/probe_fashion_mnist.py \
    --pretrained_workdir=/tmp/fmnist_masked
"""

import ml_collections

from experiments.configs import linear_probe
from experiments.configs import pretrain_masked_fashion_mnist


def get_config() -> ml_collections.ConfigDict:
  """linear_probe's config on Fashion-MNIST with a 4×4 readout."""
  config = linear_probe.get_config()
  config.dataset = pretrain_masked_fashion_mnist.get_config().dataset
  config.grid = 4
  return config
