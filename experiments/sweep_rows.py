# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""One row of the unroll-length sweep: its config and measures (no TensorFlow).

Shared by ``experiments/sweep_unroll.py`` and, on accelerator images without
TensorFlow, ``tools/gpu_sweep_check.py``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from finola_jax.models import autoencoder


def row_config(config: ml_collections.ConfigDict, decoder: str, size: int,
               channels: int, reference_side: int | None = None,
               reference_channels: int | None = None
               ) -> ml_collections.ConfigDict:
  """``config`` at stride 1 with ``image_size=size``, C and the decoder.

  With ``reference_side``, A and B start (random part and damping) and learn
  ``reference_side / size`` × as large; with ``reference_channels``, they learn
  ``reference_channels / C`` × as fast (see sweep_unroll's flags).
  """
  config = config.copy_and_resolve_references()
  config.decoder, config.stride = decoder, 1
  config.image_size, config.channels = size, channels
  if reference_side is not None:
    config.matrix_init_scale *= reference_side / size
    config.matrix_init_damping *= reference_side / size
    config.matrix_learning_rate_scale *= reference_side / size
  if reference_channels is not None:
    config.matrix_learning_rate_scale *= reference_channels / channels
  return config


def max_abs_map(config: ml_collections.ConfigDict, params,
                images: np.ndarray) -> float:
  """``max |z|`` over the feature maps of ``images`` (NaN/Inf propagate)."""
  model = autoencoder.Autoencoder(ml_collections.FrozenConfigDict(config))

  @jax.jit
  def largest(params, images):
    feature_map = model.apply({"params": params}, images,
                              method=lambda m, x: m.feature_map(m.encode(x)))
    return jnp.max(jnp.abs(feature_map))

  return float(largest(params, jnp.asarray(images)))
