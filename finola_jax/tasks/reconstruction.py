# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Reconstruction from a single vector: pixel MSE, PSNR and SSIM."""

from __future__ import annotations

import functools
from typing import Dict, NamedTuple

import dm_pix
import jax
import jax.numpy as jnp
import ml_collections

import finola_jax
from finola_jax.models import autoencoder
from finola_jax.models import encoders
from finola_jax.models import layers
from finola_jax.train import run_config
from finola_jax.train import step


def image_quality(prediction, target):
  """Per-example ``{"psnr", "ssim"}`` of predictions clipped to [0, 1]."""
  prediction = jnp.clip(prediction.astype(jnp.float32), 0.0, 1.0)
  return {"psnr": dm_pix.psnr(target, prediction),
          "ssim": dm_pix.ssim(target, prediction)}


def mean_colour_scores(images) -> Dict[str, float]:
  """Mean PSNR/SSIM of predicting each ``[N, S, S, 3]`` image by its mean
  colour: a model that does not beat it has learned nothing of the image."""
  images = jnp.asarray(images, jnp.float32)
  quality = jax.jit(image_quality)(_mean_colour(images), images)
  return {k: float(jnp.mean(v)) for k, v in quality.items()}


def _mean_colour(images):
  return jnp.broadcast_to(jnp.mean(images, axis=(1, 2), keepdims=True),
                          images.shape)


class PCACode(NamedTuple):
  """A linear code: ``x ≈ mean + (x − mean) basisᵀ basis`` (pixels flattened)."""
  mean: jax.Array   # [S·S·3]
  basis: jax.Array  # [k, S·S·3], orthonormal rows


@functools.partial(jax.jit, static_argnums=1)
def fit_pca(train_images, components: int) -> PCACode:
  """The first ``min(components, N)`` principal components of
  ``train_images`` ``[N, S, S, 3]`` (an SVD of the centred pixels)."""
  train = jnp.asarray(train_images, jnp.float32).reshape(
      train_images.shape[0], -1)
  mean = jnp.mean(train, axis=0)
  _, _, vt = jnp.linalg.svd(train - mean, full_matrices=False)
  return PCACode(mean, vt[:components])


@jax.jit
def baseline_psnr(images, code: PCACode) -> Dict[str, jax.Array]:
  """Per-example ``mean_colour_psnr`` and ``pca_psnr`` ``[N]`` of ``images``
  ``[N, S, S, 3]``: each image predicted by its mean colour, and by its
  projection on the PCA ``code`` and back (the honest linear baseline of a
  code of ``k`` numbers), clipped to ``[0, 1]``."""
  images = jnp.asarray(images, jnp.float32)
  flat = images.reshape(images.shape[0], -1)
  projected = code.mean + ((flat - code.mean) @ code.basis.T) @ code.basis
  psnr = lambda prediction: dm_pix.psnr(images, jnp.clip(prediction, 0.0, 1.0))
  return {"mean_colour_psnr": psnr(_mean_colour(images)),
          "pca_psnr": psnr(projected.reshape(images.shape))}


class ReconstructionTask(step.Task):
  """Autoencode images through one vector ``q``."""
  visualization_columns = ("input", "reconstruction")

  def __init__(self, config: ml_collections.FrozenConfigDict):
    self.config = config
    self.model = autoencoder.Autoencoder(config)

  @staticmethod
  def validate_config(config: ml_collections.ConfigDict) -> None:
    run_config.check_choice(config, "decoder", autoencoder.DECODERS)
    paths, pooling, _ = layers.multipath(config)
    if pooling == "tokens":
      tokens = encoders.num_tokens(config)
      run_config.check(
          tokens is not None, "pooling",
          "name a pooling of the encoder's map: the ResNet encoder returns no "
          "tokens for 'tokens'", pooling)
      run_config.check(
          paths <= tokens, "paths",
          f"be at most the {tokens} tokens of {encoders.encoder_name(config)} "
          "with pooling='tokens' (token m is path m's initial vector)", paths)

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
