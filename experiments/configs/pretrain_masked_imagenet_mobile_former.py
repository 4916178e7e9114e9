# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
r"""Masked-FINOLA pre-training of a Mobile-Former on ImageNet-1K, 224×224.

The recipe of configs/pretrain_masked_imagenet.py with the 294M
Mobile-Former (11.4 M parameters with the published head; QB-Heat's 285M
encoder is the nearest size) instead of the ResNet: the visible 112×112
quadrant is encoded at feature stride 16 (the stem keeps its resolution),
its 7×7 map projected to C=512 channels and extrapolated to the 14×14 map:

  python3 -m experiments.pretrain_masked --workdir=$HOME/runs/masked_mf \
    --config=experiments/configs/pretrain_masked_imagenet_mobile_former.py \
    --config.data_dir=$TFDS_DATA_DIR
"""

import ml_collections

from experiments.configs import pretrain_masked_imagenet


def get_config() -> ml_collections.ConfigDict:
  """pretrain_masked_imagenet's config with mobile_former_294m."""
  config = pretrain_masked_imagenet.get_config()
  config.encoder = "mobile_former_294m"
  return config
