# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
r"""The long-unroll recipe: FINOLA at stride 1 on 64×64 crops, two CPU cores.

The study's baseline (configs/study_unroll.py: 64×64, C=256, q walked 32
steps each way, 300 steps of 16) with the two changes that each helped it
alone (docs/results/study.md): four paths, and A and B started damped;
and q made from the encoder's whole map, as in the main job
(``pooling="flatten"``: +0.81 dB). A and B start normal at 0.1, as in the
study's baseline: the main job's skew start costs this recipe 1.03 dB.

  python3 -m experiments.reconstruct --workdir=/tmp/finola_stride1_64 \
    --config=experiments/configs/reconstruct_stride1_64.py
"""

import ml_collections

from experiments.configs import study_unroll


def get_config() -> ml_collections.ConfigDict:
  """study_unroll's baseline with paths=4, matrix_init_damping=0.01 and
  pooling="flatten"."""
  config = study_unroll.get_config()
  config.paths = 4
  config.matrix_init_damping = 0.01
  config.pooling = "flatten"
  return config
