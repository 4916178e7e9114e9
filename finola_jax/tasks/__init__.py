# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Experiments as :class:`finola_jax.train.step.Task` objects, from a config.

Imports no TensorFlow, clu or tfds (see ``finola_jax.train.step``).
"""

import ml_collections

from finola_jax.tasks import masked
from finola_jax.tasks import reconstruction
from finola_jax.train import run_config
from finola_jax.train import step

TASKS = {
    "reconstruction": reconstruction.ReconstructionTask,
    "masked": masked.MaskedTask,
}


def create_task(config: ml_collections.ConfigDict) -> step.Task:
  """The task ``config.task`` of ``config``, whose model keys it checks.

  Raises:
    ConfigError: a model or task key (named) has an inconsistent value.
  """
  run_config.check_choice(config, "task", TASKS)
  run_config.validate_model(config)
  task_class = TASKS[config.task]
  task_class.validate_config(config)
  return task_class(ml_collections.FrozenConfigDict(config))
