# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Masked-FINOLA pre-training: loss on the masked pixels only."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from finola_jax.models import masked
from finola_jax.train import trainer

EVAL_MASK_SEED = 1234


def patch_normalize(images, patch_size: int, eps: float = 1e-6):
  """Normalizes every ``p×p×3`` patch to zero mean and unit variance (MAE)."""
  b, h, w, c = images.shape
  p = patch_size
  patches = images.reshape(b, h // p, p, w // p, p, c)
  mean = jnp.mean(patches, axis=(2, 4, 5), keepdims=True)
  var = jnp.var(patches, axis=(2, 4, 5), keepdims=True)
  return ((patches - mean) / jnp.sqrt(var + eps)).reshape(images.shape)


def masked_mse(prediction, target, mask):
  """Per-example mean squared error over the pixels where ``mask`` is 1."""
  squared = jnp.square(prediction - target) * mask
  return jnp.sum(squared, axis=(1, 2, 3)) / (
      jnp.sum(mask, axis=(1, 2, 3)) * target.shape[-1])


def psnr_from_mse(mse):
  return -10.0 * jnp.log10(jnp.maximum(mse, 1e-10))


def random_visible(keys, map_size: int, mask_ratio: float):
  """``[B, n, n]`` visibility, exactly ``round((1 − ratio)·n²)`` ones each."""
  positions = map_size * map_size
  num_visible = max(1, int(round((1.0 - mask_ratio) * positions)))

  def one(key):
    ranks = jnp.argsort(jnp.argsort(jax.random.uniform(key, (positions,))))
    return (ranks < num_visible).astype(jnp.float32).reshape(map_size, map_size)

  return jax.vmap(one)(keys)


@dataclasses.dataclass(frozen=True)
class MaskedTask(trainer.Task):
  """Predict the masked part of each image from the visible part."""
  model: masked.MaskedFinola
  norm_pix_loss: bool = False
  patch_size: int = 8

  def init_params(self, rng, batch):
    images = batch["image"]
    corners = jnp.zeros(images.shape[0], jnp.int32)
    return self.model.init(rng, images, corners)["params"]

  def predict(self, params, images, keys):
    """``(prediction, pixel mask, visible-only image)`` for one mask per key.

    The mask is 1 on pixels to predict. Quadrant masking draws one corner
    per key, random masking one patch subset per key.
    """
    if self.model.masking == "quadrant":
      corners = jax.vmap(lambda k: jax.random.randint(k, (), 0, 4))(keys)
      return self.predict_quadrant(params, images, corners)
    visible = random_visible(keys, self.model.map_size, self.model.mask_ratio)
    prediction = self.model.apply({"params": params}, images, visible,
                                  method=masked.MaskedFinola.predict_from_patches)
    pixel_visible = masked.patch_to_pixel_mask(visible, self.model.stride)
    return prediction.astype(jnp.float32), 1.0 - pixel_visible, pixel_visible

  def predict_quadrant(self, params, images, corners):
    prediction = self.model.apply({"params": params}, images, corners)
    mask = masked.quadrant_mask(corners, images.shape[1], images.shape[2])
    return prediction.astype(jnp.float32), mask, 1.0 - mask

  def target(self, images):
    if self.norm_pix_loss:
      return patch_normalize(images, self.patch_size)
    return images

  def loss(self, params, batch, example_keys):
    images = batch["image"]
    prediction, mask, _ = self.predict(params, images, example_keys)
    loss = jnp.mean(masked_mse(prediction, self.target(images), mask))
    return loss, {"masked_mse": loss}

  def _eval_masks(self, images):
    """Fixed masks: every quadrant in turn, or seeded random patches."""
    if self.model.masking == "quadrant":
      return [jnp.full(images.shape[0], c, jnp.int32) for c in range(4)]
    keys = jax.random.split(jax.random.PRNGKey(EVAL_MASK_SEED), images.shape[0])
    return [keys]

  def eval_metrics(self, params, batch):
    """Masked-region loss, PSNR, and the PSNR of the mean visible colour.

    Quadrant masking averages over all four visible corners of every image.
    PSNR is in pixel space, so only reported without ``norm_pix_loss``.
    """
    images = batch["image"]
    totals = {}
    masks = self._eval_masks(images)
    for choice in masks:
      if self.model.masking == "quadrant":
        prediction, mask, visible = self.predict_quadrant(params, images, choice)
      else:
        prediction, mask, visible = self.predict(params, images, choice)
      metrics = {"masked_loss": masked_mse(prediction, self.target(images), mask)}
      if not self.norm_pix_loss:
        mean_colour = (jnp.sum(images * visible, axis=(1, 2), keepdims=True) /
                       jnp.sum(visible, axis=(1, 2), keepdims=True))
        metrics["masked_psnr"] = psnr_from_mse(
            masked_mse(jnp.clip(prediction, 0.0, 1.0), images, mask))
        metrics["mean_colour_psnr"] = psnr_from_mse(
            masked_mse(jnp.broadcast_to(mean_colour, images.shape), images, mask))
      for key, value in metrics.items():
        totals[key] = totals.get(key, 0.0) + value / len(masks)
    return totals

  def visualize(self, params, batch):
    """Visible part | prediction (visible part pasted in) | original."""
    images = batch["image"]
    if self.model.masking == "quadrant":
      corners = jnp.arange(images.shape[0]) % 4
      prediction, mask, visible = self.predict_quadrant(params, images, corners)
    else:
      prediction, mask, visible = self.predict(params, images,
                                               self._eval_masks(images)[0])
    if self.norm_pix_loss:
      prediction = prediction * jnp.std(images) + jnp.mean(images)
    grey = 0.5 * mask
    return [images * visible + grey, prediction * mask + images * visible, images]

  def features(self, params, images):
    """Pooled encoder features ``[B, C]`` of whole images."""
    return self.model.apply({"params": params}, images,
                            method=masked.MaskedFinola.features)

  def describe(self):
    return dict(trainer.describe_module(self.model),
                norm_pix_loss=self.norm_pix_loss, patch_size=self.patch_size)
