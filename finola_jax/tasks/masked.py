# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Masked-FINOLA pre-training: loss on the masked pixels only."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from finola_jax.models import encoders
from finola_jax.models import layers
from finola_jax.models import masked
from finola_jax.train import run_config
from finola_jax.train import step


def patch_statistics(images, patch_size: int, eps: float = 1e-6):
  """``(mean, std)``, each ``[B, H, W, 1]``: those of the pixel's ``p×p×3`` patch.

  ``std = sqrt(var + eps)``, the population variance over the patch.
  """
  b, h, w, c = images.shape
  p = patch_size
  patches = images.reshape(b, h // p, p, w // p, p, c)
  mean = jnp.mean(patches, axis=(2, 4, 5), keepdims=True)
  std = jnp.sqrt(jnp.var(patches, axis=(2, 4, 5), keepdims=True) + eps)
  spread = lambda x: jnp.broadcast_to(x, (b, h // p, p, w // p, p, 1)).reshape(
      b, h, w, 1)
  return spread(mean), spread(std)


def patch_normalize(images, patch_size: int, eps: float = 1e-6):
  """Normalizes every ``p×p×3`` patch to zero mean and unit variance (MAE)."""
  mean, std = patch_statistics(images, patch_size, eps)
  return (images - mean) / std


def patch_denormalize(normalized, images, patch_size: int, eps: float = 1e-6):
  """Pixels from per-patch normalized values, with ``images``' own patches'
  mean and std: the inverse of :func:`patch_normalize` on ``images``."""
  mean, std = patch_statistics(images, patch_size, eps)
  return normalized * std + mean


def masked_mse(prediction, target, mask):
  """Per-example mean squared error over the pixels where ``mask`` is 1."""
  squared = jnp.square(prediction - target) * mask
  return jnp.sum(squared, axis=(1, 2, 3)) / (
      jnp.sum(mask, axis=(1, 2, 3)) * target.shape[-1])


def psnr_from_mse(mse):
  return -10.0 * jnp.log10(jnp.maximum(mse, 1e-10))


def visible_patch_count(map_size: int, mask_ratio: float) -> int:
  """``round((1 − mask_ratio)·n²)``: the visible patches of an ``n×n`` map.

  Raises:
    ConfigError: the count leaves no patch visible or none masked (the loss
      or the encoder's input would be empty).
  """
  positions = map_size * map_size
  count = round((1.0 - mask_ratio) * positions)
  run_config.check(
      1 <= count <= positions - 1, "mask_ratio",
      f"leave between 1 and {positions - 1} of the {positions} patches of the "
      f"{map_size}×{map_size} map visible (about {1 / positions:.3g} to "
      f"{1 - 1 / positions:.3g}; it leaves {count})", mask_ratio)
  return count


def random_visible(keys, map_size: int, mask_ratio: float):
  """``[B, n, n]`` visibility, exactly ``visible_patch_count`` ones each."""
  positions = map_size * map_size
  num_visible = visible_patch_count(map_size, mask_ratio)

  def one(key):
    ranks = jnp.argsort(jnp.argsort(jax.random.uniform(key, (positions,))))
    return (ranks < num_visible).astype(jnp.float32).reshape(map_size, map_size)

  return jax.vmap(one)(keys)


class MaskedTask(step.Task):
  """Predict the masked part of each image from the visible part."""
  visualization_columns = ("visible", "prediction", "original")

  def __init__(self, config: ml_collections.FrozenConfigDict):
    self.config = config
    self.model = masked.MaskedFinola(config)

  @staticmethod
  def validate_config(config: ml_collections.ConfigDict) -> None:
    run_config.check_choice(config, "masking", masked.MASKINGS)
    run_config.check(
        layers.multipath(config)[1] == "mean", "pooling",
        "be 'mean' for the masked task (its paths read channel blocks of the "
        "encoder's map, or their mean over the visible patches)",
        layers.multipath(config)[1])
    run_config.check(
        layers.q_norm(config) == "none", "q_norm",
        "be 'none' for the masked task (it extrapolates the encoder's map; "
        "there is no q)", layers.q_norm(config))
    run_config.check_choice(config, "extrapolation", layers.AUTOREGRESSIONS)
    run_config.check(
        config.image_size % (2 * config.stride) == 0, "image_size",
        f"divide by 2·config.stride={2 * config.stride}: each quadrant must "
        "map to whole feature positions", config.image_size)
    if encoders.is_mobile_former(config):
      run_config.check(
          encoders.encoder_stride(config) == config.stride, "encoder_stride",
          f"be None or config.stride={config.stride}: the encoder's map is "
          "the block FINOLA extrapolates", config.get("encoder_stride"))
    else:
      run_config.check(
          1 << config.encoder_depth >= config.stride, "encoder_depth",
          f"reach config.stride={config.stride}: at least "
          f"{layers.log2(config.stride)} stages", config.encoder_depth)
    if config.masking == "random":  # Quadrant masking does not read it.
      visible_patch_count(config.image_size // config.stride, config.mask_ratio)
    if config.norm_pix_loss:
      run_config.check(
          config.patch_size >= 1 and config.image_size % config.patch_size == 0,
          "patch_size", f"divide config.image_size={config.image_size}",
          config.patch_size)

  def init_params(self, rng):
    size = self.config.image_size
    return self.model.init(rng, jnp.zeros((1, size, size, 3)),
                           jnp.zeros(1, jnp.int32))["params"]

  def predict(self, params, images, keys):
    """``(prediction, pixel mask, visible-only image)`` for one mask per key.

    The mask is 1 on pixels to predict. Quadrant masking draws one corner
    per key, random masking one patch subset per key.
    """
    if self.config.masking == "quadrant":
      corners = jax.vmap(lambda k: jax.random.randint(k, (), 0, 4))(keys)
      return self.predict_quadrant(params, images, corners)
    visible = random_visible(keys, self.model.map_size, self.config.mask_ratio)
    prediction = self.model.apply({"params": params}, images, visible,
                                  method=masked.MaskedFinola.predict_from_patches)
    pixel_visible = masked.patch_to_pixel_mask(visible, self.config.stride)
    return prediction.astype(jnp.float32), 1.0 - pixel_visible, pixel_visible

  def predict_quadrant(self, params, images, corners):
    prediction = self.model.apply({"params": params}, images, corners)
    mask = masked.quadrant_mask(corners, images.shape[1], images.shape[2])
    return prediction.astype(jnp.float32), mask, 1.0 - mask

  def target(self, images):
    if self.config.norm_pix_loss:
      return patch_normalize(images, self.config.patch_size)
    return images

  def loss(self, params, batch, example_keys):
    images = batch["image"]
    prediction, mask, _ = self.predict(params, images, example_keys)
    loss = jnp.mean(masked_mse(prediction, self.target(images), mask))
    return loss, {"masked_mse": loss}

  def _evaluation_predictions(self, params, images, keys):
    """Quadrant masking: each corner in turn; random: the keys' patches."""
    if self.config.masking == "quadrant":
      return [self.predict_quadrant(params, images,
                                    jnp.full(images.shape[0], corner, jnp.int32))
              for corner in range(4)]
    return [self.predict(params, images, keys)]

  def eval_metrics(self, params, batch, example_keys):
    """Masked-region loss, PSNR, and the PSNR of the mean visible colour.

    Quadrant masking averages over all four visible corners of every image;
    random masking draws each image's patches from its key (its index in
    the split). PSNR is in pixel space, so only reported without
    ``norm_pix_loss``.
    """
    images = batch["image"]
    totals = {}
    predictions = self._evaluation_predictions(params, images, example_keys)
    for prediction, mask, visible in predictions:
      metrics = {"masked_loss": masked_mse(prediction, self.target(images), mask)}
      if not self.config.norm_pix_loss:
        mean_colour = (jnp.sum(images * visible, axis=(1, 2), keepdims=True) /
                       jnp.sum(visible, axis=(1, 2), keepdims=True))
        metrics["masked_psnr"] = psnr_from_mse(
            masked_mse(jnp.clip(prediction, 0.0, 1.0), images, mask))
        metrics["mean_colour_psnr"] = psnr_from_mse(
            masked_mse(jnp.broadcast_to(mean_colour, images.shape), images, mask))
      for key, value in metrics.items():
        totals[key] = totals.get(key, 0.0) + value / len(predictions)
    return totals

  def visualize(self, params, batch, example_keys):
    """Visible part | prediction (visible part pasted in) | original.

    Quadrant masking shows corner ``index % 4`` of each image.
    """
    images = batch["image"]
    if self.config.masking == "quadrant":
      prediction, mask, visible = self.predict_quadrant(
          params, images, batch["index"] % 4)
    else:
      prediction, mask, visible = self.predict(params, images, example_keys)
    if self.config.norm_pix_loss:  # As MAE draws it: each patch's own statistics.
      prediction = patch_denormalize(prediction, images, self.config.patch_size)
    grey = 0.5 * mask
    return [images * visible + grey, prediction * mask + images * visible, images]

  def parameter_metrics(self, params):
    """``finola_jax.matrix_statistics`` of ``A``, ``B``."""
    return layers.matrix_metrics(params)

  def features(self, params, images):
    """Pooled encoder features of whole images (for probing; see
    ``MaskedFinola.features``)."""
    return self.model.apply({"params": params}, images,
                            method=masked.MaskedFinola.features)
