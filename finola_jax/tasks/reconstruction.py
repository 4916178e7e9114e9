# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Reconstruction from a single vector: pixel MSE, PSNR and SSIM."""

from __future__ import annotations

import dm_pix
import jax
import jax.numpy as jnp
import ml_collections

import finola_jax
from finola_jax.models import autoencoder
from finola_jax.models import layers
from finola_jax.train import run_config
from finola_jax.train import step


def image_quality(prediction, target):
  """Per-example ``{"psnr", "ssim"}`` of predictions clipped to [0, 1]."""
  prediction = jnp.clip(prediction.astype(jnp.float32), 0.0, 1.0)
  return {"psnr": dm_pix.psnr(target, prediction),
          "ssim": dm_pix.ssim(target, prediction)}


class ReconstructionTask(step.Task):
  """Autoencode images through one vector ``q``."""
  visualization_columns = ("input", "reconstruction")

  def __init__(self, config: ml_collections.FrozenConfigDict):
    self.config = config
    self.model = autoencoder.Autoencoder(config)

  @staticmethod
  def validate_config(config: ml_collections.ConfigDict) -> None:
    run_config.check_choice(config, "decoder", autoencoder.DECODERS)
    run_config.check(
        layers.multipath(config)[1] != "tokens", "pooling",
        "name a pooling of the encoder's map: the ResNet encoder returns no "
        "tokens for 'tokens'", "tokens")

  def init_params(self, rng):
    size = self.config.image_size
    return self.model.init(rng, jnp.zeros((1, size, size, 3)))["params"]

  def reconstruct(self, params, images):
    return self.model.apply({"params": params}, images).astype(jnp.float32)

  def loss(self, params, batch, example_keys):
    """Pixel MSE; the metrics add the sizes of the unrolled maps
    (``finola_jax.map_statistics``: cheap reductions of maps made anyway)."""
    del example_keys  # deterministic
    pixels, maps = self.model.apply({"params": params}, batch["image"],
                                    method=autoencoder.Autoencoder.reconstruct_with_maps)
    mse = jnp.mean(jnp.square(pixels.astype(jnp.float32) - batch["image"]))
    return mse, dict(finola_jax.map_statistics(jax.lax.stop_gradient(maps)),
                     mse=mse)

  def parameter_metrics(self, params):
    """``finola_jax.matrix_statistics`` of ``A``, ``B`` (none for ``dense``)."""
    return layers.matrix_metrics(params)

  def eval_metrics(self, params, batch, example_keys):
    del example_keys  # deterministic
    return image_quality(self.reconstruct(params, batch["image"]), batch["image"])

  def visualize(self, params, batch, example_keys):
    del example_keys  # deterministic
    return [batch["image"], self.reconstruct(params, batch["image"])]
