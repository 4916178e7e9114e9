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

With ``config.paths = M > 1`` the encoder's map has ``M·C`` channels, path
``m`` reading channels ``m·C .. m·C + C − 1``: each path completes its own
``C``-channel block (or unrolls its own pooled ``q``) with its own ``A_m``,
``B_m``, and ``config.combine`` joins the M completed maps. Probes read the
whole ``M·C``-channel map.

``config.encoder`` names the encoder (:mod:`encoders`). A Mobile-Former's
map (at the feature stride ``s``) is projected by a 1×1 layer
(``block_projection``) to the ``M·C`` channels the extrapolation reads; its
probes read the encoder's own map and tokens.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

import finola_jax
from finola_jax.models import encoders
from finola_jax.models import layers
from finola_jax.models import mobile_former

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
  quadrant's NaN into the result.
  """
  return stacked[corners, jnp.arange(stacked.shape[1])]


def flip_to_top_left(x, corners):
  """Flips each ``[B, h, w, C]`` example so its ``corners[b]`` is the top left.

  Its own inverse: bottom corners flip the rows, right corners the columns.
  """
  bottom = (corners >= 2)[:, None, None, None]
  right = (corners % 2 == 1)[:, None, None, None]
  x = jnp.where(bottom, x[:, ::-1], x)
  return jnp.where(right, x[:, :, ::-1], x)


class MaskedFinola(nn.Module):
  """Encoder on the visible part → FINOLA completion → pixels.

  The ResNet encoder's first ``log2(stride)`` stages downsample, so its map
  has the feature-map stride ``s``; further stages (``encoder_depth`` in
  all) keep the resolution. A Mobile-Former runs at output stride ``s``.
  The config keys read are those of ``experiments/configs/pretrain_masked.py``'s
  model and numerics sections.
  """
  config: ml_collections.FrozenConfigDict

  def setup(self):
    config = self.config
    if config.masking not in MASKINGS:
      raise ValueError(f"Unknown masking {config.masking!r}; expected one of "
                       f"{MASKINGS}.")
    layers.check_autoregression(config.extrapolation)
    dtype = jnp.dtype(config.precision)
    paths = self.paths
    self.encoder = encoders.create_encoder(
        config, channels=paths * config.channels,
        downsample=layers.log2(config.stride))
    if encoders.is_mobile_former(config):
      self.block_projection = nn.Dense(paths * config.channels, dtype=dtype)
    self.matrices = layers.finola_matrices(config, paths)
    self.upsampler = layers.Upsampler(config.stride, config.decoder_width,
                                      layers.upsampler_norm(config),
                                      dtype=dtype)

  @property
  def map_size(self) -> int:
    return self.config.image_size // self.config.stride

  @property
  def paths(self) -> int:
    return layers.multipath(self.config)[0]

  def features(self, images):
    """Pooled encoder features of whole images (for probing): the mean of
    the ResNet's map ``[B, M·C]``, or a Mobile-Former's
    :func:`mobile_former.classifier_features` ``[B, D + d]``."""
    feature_map, tokens = layers.split_encoder_output(self.encoder(images))
    feature_map = feature_map.astype(jnp.float32)
    if tokens is None:
      return jnp.mean(feature_map, axis=(1, 2))
    return mobile_former.classifier_features(feature_map,
                                             tokens.astype(jnp.float32))

  def encode_map(self, images):
    """The encoder's map of ``images`` with the ``M·C`` channels FINOLA
    walks on: ``[B, H/s, W/s, M·C]``."""
    feature_map, _ = layers.split_encoder_output(self.encoder(images))
    if encoders.is_mobile_former(self.config):
      feature_map = self.block_projection(feature_map)
    return feature_map

  def _split_paths(self, x):
    """``[B, ..., M·C]`` → ``[B, M, ..., C]``."""
    x = x.reshape(x.shape[:-1] + (self.paths, self.config.channels))
    return jnp.moveaxis(x, -2, 1)

  def _join_paths(self, feature_map):
    """Completed ``[B, n, n, M·C]`` map → the map the decoder reads."""
    return layers.combine_paths(self._split_paths(feature_map),
                                layers.multipath(self.config)[2])

  def _grow(self, block, matrices, height: int, width: int, step):
    """One example's ``[h, w, M·C]`` top-left block grown to
    ``height×width`` by walks of signed ``step`` (no growth along an axis
    already full); path ``m`` grows channels ``m·C .. m·C + C − 1``."""
    normalized = layers.check_autoregression(self.config.extrapolation)
    if matrices[0].ndim == 2:
      return layers.autoregress(
          finola_jax.extrapolate, block, matrices, height, width,
          config=self.config, corner="top_left", step=step,
          normalized=normalized)
    grown = layers.autoregress(
        finola_jax.extrapolate_paths, self._split_paths(block[None])[0],
        matrices, height, width, config=self.config, corner="top_left",
        step=step, normalized=normalized)
    return jnp.moveaxis(grown, 0, -2).reshape(grown.shape[1:3] + (-1,))

  def complete_from_corner(self, block, corners):
    """The full map ``[B, n, n, M·C]`` from each example's corner block
    ``[B, h, w, M·C]``.

    Equals ``finola_jax.extrapolate(block[b], corner=CORNERS[corners[b]])``
    for every ``b`` (per path: ``finola_jax.extrapolate_paths``), computing
    only that corner: each block is flipped so its corner is the top left,
    where walking away from it along a flipped axis is a step of ``−1``
    (moving up or left in the image); the walks along the two axes, with
    per-example signs, follow ``config.path``; the completed map is flipped
    back.
    """
    size = self.map_size
    matrices = self.matrices()  # Outside jax.vmap: flax creates them here.
    row_steps = jnp.where(corners >= 2, -1.0, 1.0)
    col_steps = jnp.where(corners % 2 == 1, -1.0, 1.0)

    def vertical(x):
      return jax.vmap(lambda b, s: self._grow(b, matrices, size, b.shape[1], s))(
          x, row_steps)

    def horizontal(x):
      return jax.vmap(lambda b, s: self._grow(b, matrices, b.shape[0], size, s))(
          x, col_steps)

    block = flip_to_top_left(block, corners)
    if self.config.path == "vertical_first":
      full = horizontal(vertical(block))
    elif self.config.path == "horizontal_first":
      full = vertical(horizontal(block))
    else:
      full = 0.5 * (horizontal(vertical(block)) + vertical(horizontal(block)))
    return flip_to_top_left(full, corners)

  def predict_from_quadrant(self, images, corners):
    """Pixels ``[B, H, W, 3]`` predicted from the quadrant ``corners[b]``.

    The encoder only ever receives the visible quadrant.
    """
    block = self.encode_map(select(quadrant_views(images), corners))
    return self.decode(self._join_paths(self.complete_from_corner(block,
                                                                  corners)))

  def predict_from_patches(self, images, visible):
    """Pixels predicted from the visible patches.

    Args:
      images: ``[B, H, W, 3]``.
      visible: ``[B, H/s, W/s]`` 1 where the ``s×s`` patch is visible.
    """
    pixel_visible = patch_to_pixel_mask(visible, self.config.stride)
    features = self.encode_map(images * pixel_visible).astype(jnp.float32)
    weights = visible[..., None]
    q = jnp.sum(features * weights, axis=(1, 2)) / jnp.maximum(
        jnp.sum(weights, axis=(1, 2)), 1.0)
    A, B = self.matrices()
    options = dict(config=self.config, path=self.config.path,
                   normalized=layers.check_autoregression(
                       self.config.extrapolation))
    if A.ndim == 2:
      return self.decode(layers.autoregress(
          finola_jax.unroll, q, (A, B), self.map_size, self.map_size,
          **options))
    maps = layers.autoregress(finola_jax.unroll_paths, self._split_paths(q),
                              (A, B), self.map_size, self.map_size, **options)
    return self.decode(layers.combine_paths(maps,
                                            layers.multipath(self.config)[2]))

  def decode(self, feature_map):
    """The map ``[B, h, w, C]`` → pixels (``config.decoder_chunk`` at a time)."""
    return layers.decode_in_chunks(self.upsampler, feature_map,
                                   self.config.decoder_chunk)

  def __call__(self, images, corners):
    """Quadrant masking; the entry point used for initialization."""
    return self.predict_from_quadrant(images, corners)
