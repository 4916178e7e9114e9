# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Masked FINOLA (the paper's experiment 2): predict the image from a part.

``masking="quadrant"``: one quadrant of each image stays visible; the encoder
sees only that quadrant, its feature map is the known corner block, and
``finola_jax.extrapolate`` completes the whole map from it.
``masking="random"``: a random subset of the ``s×s`` patches stays visible;
the encoder sees the image with the other patches zeroed, the features of
the visible positions are pooled into one ``q`` and unrolled from the centre.
Either way a decoder turns the full map into pixels.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

import finola_jax
from finola_jax.models import layers

MASKINGS = ("quadrant", "random")


def quadrant_views(images):
  """The four quadrants ``[4, B, H/2, W/2, 3]`` in ``finola_jax.CORNERS`` order."""
  h, w = images.shape[1] // 2, images.shape[2] // 2
  return jnp.stack([images[:, :h, :w], images[:, :h, w:],
                    images[:, h:, :w], images[:, h:, w:]])


def quadrant_mask(corners, height: int, width: int):
  """``[B, H, W, 1]``: 1 on the three masked quadrants, 0 on the visible one."""
  rows = jnp.arange(height)[:, None] >= height // 2
  cols = jnp.arange(width)[None, :] >= width // 2
  bottom = (corners >= 2)[:, None, None]
  right = (corners % 2 == 1)[:, None, None]
  visible = (rows[None] == bottom) & (cols[None] == right)
  return (~visible).astype(jnp.float32)[..., None]


def patch_to_pixel_mask(visible, stride: int):
  """``[B, h, w]`` patch mask → ``[B, s·h, s·w, 1]`` pixel mask."""
  pixels = jnp.repeat(jnp.repeat(visible, stride, axis=1), stride, axis=2)
  return pixels[..., None]


def select(stacked, corners):
  """Picks ``stacked[corners[b], b]`` for every example ``b``.

  Indexing rather than a one-hot product: ``0 · NaN`` would let a masked
  quadrant's NaN (or an overflowing unused completion) into the result.
  """
  return stacked[corners, jnp.arange(stacked.shape[1])]


class MaskedFinola(nn.Module):
  """Encoder on the visible part → FINOLA completion → pixels.

  The encoder's first ``log2(stride)`` stages downsample, so its map has the
  feature-map stride ``s``; further stages (``encoder_depth`` in all) keep
  the resolution.
  """
  image_size: int
  stride: int = 4
  channels: int = 256
  encoder_width: int = 32
  encoder_depth: int = 3
  masking: str = "quadrant"
  mask_ratio: float = 0.75
  extrapolation: str = "finola"
  path: str = "vertical_first"
  decoder_width: int = 64
  dtype: Any = jnp.float32

  def setup(self):
    if self.masking not in MASKINGS:
      raise ValueError(f"Unknown masking {self.masking!r}; expected one of {MASKINGS}.")
    layers.check_autoregression(self.extrapolation)
    self.encoder = layers.ResNetEncoder(
        self.encoder_width, self.encoder_depth, self.channels,
        downsample=layers.log2(self.stride), dtype=self.dtype)
    self.matrices = layers.FinolaMatrices(self.channels)
    self.upsampler = layers.Upsampler(self.stride, self.decoder_width,
                                      dtype=self.dtype)

  @property
  def map_size(self) -> int:
    return self.image_size // self.stride

  def features(self, images):
    """Pooled encoder features ``[B, C]`` of whole images (for probing)."""
    return jnp.mean(self.encoder(images).astype(jnp.float32), axis=(1, 2))

  def _extrapolate(self, block, corner: str):
    A, B = self.matrices()
    return finola_jax.extrapolate(
        block.astype(self.dtype), A.astype(self.dtype), B.astype(self.dtype),
        self.map_size, self.map_size, corner=corner, path=self.path,
        normalized=layers.check_autoregression(self.extrapolation))

  def predict_from_quadrant(self, images, corners):
    """Pixels ``[B, H, W, 3]`` predicted from the quadrant ``corners[b]``.

    The encoder only ever receives the visible quadrant. Each example's
    completion is computed for every corner (``corner`` is static in
    ``extrapolate``) and its own is selected.
    """
    block = self.encoder(select(quadrant_views(images), corners))
    completions = jnp.stack([self._extrapolate(block, corner)
                             for corner in finola_jax.CORNERS])
    return self.upsampler(select(completions, corners))

  def predict_from_patches(self, images, visible):
    """Pixels predicted from the visible patches.

    Args:
      images: ``[B, H, W, 3]``.
      visible: ``[B, H/s, W/s]`` 1 where the ``s×s`` patch is visible.
    """
    pixel_visible = patch_to_pixel_mask(visible, self.stride)
    features = self.encoder(images * pixel_visible).astype(jnp.float32)
    weights = visible[..., None]
    q = jnp.sum(features * weights, axis=(1, 2)) / jnp.maximum(
        jnp.sum(weights, axis=(1, 2)), 1.0)
    feature_map = layers.unroll_matrices(
        q, self.matrices(), self.map_size, self.map_size, path=self.path,
        normalized=layers.check_autoregression(self.extrapolation),
        dtype=self.dtype)
    return self.upsampler(feature_map)

  def __call__(self, images, corners):
    """Quadrant masking; the entry point used for initialization."""
    return self.predict_from_quadrant(images, corners)
