# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Reconstruction from a single vector: pixel MSE, PSNR and SSIM."""

from __future__ import annotations

import dataclasses

import dm_pix
import jax
import jax.numpy as jnp

from finola_jax.models import autoencoder
from finola_jax.train import trainer


def image_quality(prediction, target):
  """Per-example ``{"psnr", "ssim"}`` of predictions clipped to [0, 1]."""
  prediction = jnp.clip(prediction.astype(jnp.float32), 0.0, 1.0)
  return {"psnr": dm_pix.psnr(target, prediction),
          "ssim": dm_pix.ssim(target, prediction)}


@dataclasses.dataclass(frozen=True)
class ReconstructionTask(trainer.Task):
  """Autoencode images through one vector ``q``."""
  model: autoencoder.Autoencoder

  def init_params(self, rng, batch):
    return self.model.init(rng, batch["image"])["params"]

  def reconstruct(self, params, images):
    return self.model.apply({"params": params}, images).astype(jnp.float32)

  def loss(self, params, batch, example_keys):
    del example_keys  # deterministic
    error = self.reconstruct(params, batch["image"]) - batch["image"]
    mse = jnp.mean(jnp.square(error))
    return mse, {"mse": mse}

  def eval_metrics(self, params, batch):
    return image_quality(self.reconstruct(params, batch["image"]), batch["image"])

  def visualize(self, params, batch):
    return [batch["image"], self.reconstruct(params, batch["image"])]

  def describe(self):
    return trainer.describe_module(self.model)
