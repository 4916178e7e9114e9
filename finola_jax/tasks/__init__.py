# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Experiments as :class:`finola_jax.train.step.Task` objects, from a config.

Imports no TensorFlow, clu or tfds (see ``finola_jax.train.step``).
"""

import ml_collections

from finola_jax.models import encoders
from finola_jax.models import layers
from finola_jax.models import mobile_former
from finola_jax.tasks import masked
from finola_jax.tasks import reconstruction
from finola_jax.train import run_config
from finola_jax.train import step

# Model keys added after runs had been saved without them, each with the
# value that builds those runs' models: a run resumes with a key added at
# this value (run_config.check_same_run).
ADDED_KEY_DEFAULTS = {**layers.MULTIPATH_DEFAULTS, **layers.MATRIX_DEFAULTS,
                      **layers.Q_NORM_DEFAULTS, **encoders.ENCODER_DEFAULTS}

TASKS = {
    "reconstruction": reconstruction.ReconstructionTask,
    "masked": masked.MaskedTask,
}


def create_task(config: ml_collections.ConfigDict) -> step.Task:
  """The task ``config.task`` of ``config``, whose model keys it checks
  (:func:`validate`).

  Raises:
    ConfigError: a model or task key (named) has an inconsistent value.
  """
  validate(config)
  return TASKS[config.task](ml_collections.FrozenConfigDict(config))


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks ``config.task`` and every model and task key it reads.

  Raises:
    ConfigError: a model or task key (named) has an inconsistent value.
  """
  run_config.check_choice(config, "task", TASKS)
  run_config.validate_model(config)
  validate_multipath(config)
  validate_encoder(config)
  validate_matrices(config)
  validate_upsampler(config)
  TASKS[config.task].validate_config(config)


def validate_multipath(config: ml_collections.ConfigDict) -> None:
  """Checks ``paths``, ``pooling``, ``combine`` (absent: single path) and
  ``q_norm``.

  Raises:
    ConfigError: naming the key whose value is refused.
  """
  paths, pooling, combine = layers.multipath(config)
  run_config.check(
      isinstance(paths, int) and not isinstance(paths, bool) and paths >= 1,
      "paths", "be an int >= 1 (the number of FINOLA paths M)", paths)
  run_config.check_value_in("pooling", pooling, layers.POOLINGS)
  run_config.check_value_in("combine", combine, layers.COMBINES)
  run_config.check_value_in("q_norm", layers.q_norm(config), layers.Q_NORMS)


def validate_matrices(config: ml_collections.ConfigDict) -> None:
  """Checks ``matrix_init`` (absent: ``"normal"``).

  Raises:
    ConfigError: naming the key when its value is refused.
  """
  run_config.check_value_in("matrix_init", layers.matrix_init(config),
                            layers.MATRIX_INITS)


def validate_upsampler(config: ml_collections.ConfigDict) -> None:
  """Checks ``upsampler_norm`` (absent: ``"none"``).

  Raises:
    ConfigError: naming the key when its value is refused.
  """
  run_config.check_value_in("upsampler_norm", layers.upsampler_norm(config),
                            layers.UPSAMPLER_NORMS)


def validate_encoder(config: ml_collections.ConfigDict) -> None:
  """Checks ``encoder`` and ``encoder_stride`` (absent: the ResNet).

  Raises:
    ConfigError: naming the key whose value is refused.
  """
  name = encoders.encoder_name(config)
  run_config.check_value_in("encoder", name, encoders.ENCODERS)
  stride = config.get("encoder_stride",
                      encoders.ENCODER_DEFAULTS["encoder_stride"])
  if not encoders.is_mobile_former(config):
    run_config.check(
        stride is None, "encoder_stride",
        "be None with the ResNet encoder (its stride follows encoder_depth, "
        "or config.stride in the masked task)", stride)
    return
  native = mobile_former.native_stride(name)
  key = "stride" if stride is None else "encoder_stride"
  stride = encoders.encoder_stride(config)
  run_config.check(
      isinstance(stride, int) and not isinstance(stride, bool)
      and run_config.is_power_of_two(stride) and stride <= native, key,
      f"be a power of two from 1 to {native}: {name}'s feature stride"
      + (" (None: config.stride)" if key == "encoder_stride" else
         " is config.stride unless config.encoder_stride is set"), stride)
  run_config.check(config.image_size % stride == 0, "image_size",
                   f"divide by the encoder's feature stride {stride}",
                   config.image_size)
