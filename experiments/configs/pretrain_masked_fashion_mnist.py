# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
r"""Masked-FINOLA pre-training on Fashion-MNIST's unlabeled training images.

The model of configs/pretrain_masked.py (32×32, stride 4, C=128) on the
50,000 training images of an IDX directory (its held-out sixth is only
evaluated), padded 28→32 on black, randomly flipped. 400 steps of 32
(12,800 images, a quarter of an epoch) instead of the default 1,200 keep a
run within about 10 minutes on two CPU cores (0.85 steps/s measured at load
~3; the final evaluation of the 10,000 held-out images adds 1–3 minutes).
QB-Heat and random masking are overrides (see README.md, "Probing on
Fashion-MNIST"):

  python3 -m experiments.pretrain_masked --workdir=/tmp/fmnist_masked \
    --config=experiments/configs/pretrain_masked_fashion_mnist.py
  ... --config.extrapolation=linear          # QB-Heat
  ... --config.masking=random                # random masking
"""

import ml_collections

from experiments.configs import pretrain_masked

# The data directory from the repository root (see its README.md).
FASHION_MNIST = "../shared/data/fashion_mnist"
STEPS = 400


def get_config() -> ml_collections.ConfigDict:
  """pretrain_masked's config on Fashion-MNIST, with a 10-minute budget."""
  config = pretrain_masked.get_config()
  config.dataset = f"idx:{FASHION_MNIST}"
  config.colour_augmentation = False  # Grey images; IDX sources only flip.
  config.steps = STEPS
  # One evaluation (at the end) of the 10,000 held-out images.
  config.eval_every = STEPS
  config.checkpoint_every = STEPS // 2
  return config
