# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
r"""Masked-FINOLA pre-training, offline on a CPU.

One quadrant of each 32×32 image stays visible; its 4×4 block of features
(stride 4, C=128) is extrapolated to the 8×8 map with the learned A, B and
decoded; the loss is the pixel MSE on the three masked quadrants. The
default config of ``experiments.pretrain_masked``:

  python3 -m experiments.pretrain_masked --workdir=/tmp/finola_masked
"""

import ml_collections

from experiments.configs import reconstruct


def get_config() -> ml_collections.ConfigDict:
  """The main job's data, numerics and schedule with a masked model."""
  config = reconstruct.get_config()
  config.task = "masked"
  del config.decoder  # The masked model always extrapolates with A, B.
  # As the masked tables were measured; its paths read the visible patches'
  # mean (the masked task takes no other pooling).
  config.update(reconstruct.BEFORE_STUDY)
  config.channels = 128
  # quadrant: one visible quadrant, FINOLA extrapolates from its corner;
  # random: random stride×stride patches visible, pooled into one q and
  # unrolled from the centre.
  config.masking = "quadrant"
  config.mask_ratio = 0.75  # fraction of patches masked (masking="random")
  # finola: normalized; linear: QB-Heat's un-normalized extrapolation.
  config.extrapolation = "finola"
  # Per-patch normalized pixel targets (as MAE), patches of patch_size².
  config.norm_pix_loss = False
  config.patch_size = 8
  # The masked recipes' tables were measured with A and B at the full rate;
  # the study that slowed them for the main job trained reconstructions.
  config.matrix_learning_rate_scale = 1.0
  config.eval_every = 600
  config.checkpoint_every = 300
  return config
