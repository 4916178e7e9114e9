# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Experiments as :class:`finola_jax.train.step.Task` objects, from a config.

Imports no TensorFlow, clu or tfds (see ``finola_jax.train.step``).
"""

import ml_collections

from finola_jax.models import layers
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
  validate_multipath(config)
  task_class = TASKS[config.task]
  task_class.validate_config(config)
  return task_class(ml_collections.FrozenConfigDict(config))


def validate_multipath(config: ml_collections.ConfigDict) -> None:
  """Checks ``paths``, ``pooling`` and ``combine`` (absent: single path).

  Raises:
    ConfigError: naming the key whose value is refused.
  """
  paths, pooling, combine = layers.multipath(config)
  run_config.check(
      isinstance(paths, int) and not isinstance(paths, bool) and paths >= 1,
      "paths", "be an int >= 1 (the number of FINOLA paths M)", paths)
  run_config.check(pooling in layers.POOLINGS, "pooling",
                   f"be one of {layers.POOLINGS}", pooling)
  run_config.check(combine in layers.COMBINES, "combine",
                   f"be one of {layers.COMBINES}", combine)
