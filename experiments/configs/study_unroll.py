# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
r"""The long-unroll study's baseline: FINOLA at stride 1 on 64×64 crops.

The sweep's 64×64, C=256 row (docs/results/sweep.md: A and B start at
0.1 × 16/64 and learn at 0.25 × 16/64 × 128/256 of the rate) with the
study's budget, fixed before it ran: 300 steps of 16, about 10 minutes on
two CPU cores. Each arm of experiments/study_unroll.py changes one key:

  python3 -m experiments.study_unroll --root=/tmp/finola_study
"""

import ml_collections

from experiments import sweep_rows
from experiments.configs import reconstruct

SIZE, CHANNELS = 64, 256


def get_config() -> ml_collections.ConfigDict:
  """reconstruct's config at stride 1, 64×64, C=256, the study's budget."""
  config = reconstruct.get_config()
  config.update(reconstruct.BEFORE_STUDY)  # The study's baseline, as measured.
  config.matrix_learning_rate_scale = 0.25
  config = sweep_rows.row_config(config, "finola", SIZE, CHANNELS,
                                 reference_side=16, reference_channels=128)
  config.steps = 300
  config.batch_size = 16
  config.warmup_steps = 50
  config.log_every = 50
  config.eval_every = config.steps  # one evaluation, at the end
  config.checkpoint_every = 100
  return config
