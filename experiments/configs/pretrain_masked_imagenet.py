# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
r"""Masked-FINOLA pre-training on ImageNet-1K at 224×224, on accelerators.

One visible quadrant (7×7 of the 14×14 map at stride 16) extrapolated by
FINOLA, per-patch normalized targets:

  python3 -m experiments.pretrain_masked --workdir=$HOME/runs/masked \
    --config=experiments/configs/pretrain_masked_imagenet.py \
    --config.data_dir=$TFDS_DATA_DIR
"""

import ml_collections

from experiments.configs import pretrain_masked


def get_config() -> ml_collections.ConfigDict:
  """The embedded masked recipe with ImageNet's data, sizes and schedule.

  Learning rate, warm-up and patch size are the embedded recipe's: not tuned
  for ImageNet (nor measured here).
  """
  config = pretrain_masked.get_config()
  config.dataset = "imagenet2012"
  config.image_size = 224
  config.stride = 16
  config.channels = 512
  config.encoder_width = 64
  config.encoder_depth = 5
  config.decoder_width = 64
  config.norm_pix_loss = True
  config.precision = "bfloat16"
  config.steps = 200_000
  config.batch_size = 1024
  config.eval_every = 5000
  config.checkpoint_every = 2000
  return config
