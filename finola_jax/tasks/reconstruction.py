# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Reconstruction from a single vector: pixel MSE, PSNR and SSIM."""

from __future__ import annotations

import dm_pix
import jax.numpy as jnp
import ml_collections

from finola_jax.models import autoencoder
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

  def init_params(self, rng):
    size = self.config.image_size
    return self.model.init(rng, jnp.zeros((1, size, size, 3)))["params"]

  def reconstruct(self, params, images):
    return self.model.apply({"params": params}, images).astype(jnp.float32)

  def loss(self, params, batch, example_keys):
    del example_keys  # deterministic
    error = self.reconstruct(params, batch["image"]) - batch["image"]
    mse = jnp.mean(jnp.square(error))
    return mse, {"mse": mse}

  def eval_metrics(self, params, batch, example_keys):
    del example_keys  # deterministic
    return image_quality(self.reconstruct(params, batch["image"]), batch["image"])

  def visualize(self, params, batch, example_keys):
    del example_keys  # deterministic
    return [batch["image"], self.reconstruct(params, batch["image"])]
