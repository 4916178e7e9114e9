# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
r"""The first version of the paper: ImageNet at 256×256 through a 16×16 map.

FINOLA unrolls q over a 16×16 map (stride 16) and a convolutional upsampler
(four nearest ×2 blocks, then three 3×3 convolutions) turns it into pixels:

  python3 -m experiments.reconstruct --workdir=$HOME/runs/recon16x16 \
    --config=experiments/configs/reconstruct_imagenet_16x16.py \
    --config.data_dir=$TFDS_DATA_DIR
"""

import ml_collections

from experiments.configs import reconstruct_imagenet256


def get_config() -> ml_collections.ConfigDict:
  """The paper's 256×256 recipe with the map at stride 16."""
  config = reconstruct_imagenet256.get_config()
  config.stride = 16
  return config
