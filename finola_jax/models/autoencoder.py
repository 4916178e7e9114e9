# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Image → one vector q → feature map → image (the paper's experiment 1)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from finola_jax.models import layers

DECODERS = ("finola", "linear", "dense")


class Autoencoder(nn.Module):
  """Encodes an image into ``q ∈ R^C`` and decodes it back.

  ``decoder``:
    - ``"finola"``: ``finola_jax.unroll`` of ``q`` from the centre of an
      ``(H/s)×(W/s)`` map with the learned ``A``, ``B``;
    - ``"linear"``: the same without normalization (QB-Heat);
    - ``"dense"``: ``q`` → dense layer → the map (no autoregression).
  The map is turned into pixels by :class:`layers.Upsampler` (three 3×3
  convolutions at ``s = 1``).
  """
  image_size: int
  stride: int = 4
  channels: int = 256
  encoder_width: int = 32
  encoder_depth: int = 3
  decoder: str = "finola"
  path: str = "vertical_first"
  decoder_width: int = 64
  dtype: Any = jnp.float32

  def setup(self):
    if self.decoder not in DECODERS:
      raise ValueError(f"Unknown decoder {self.decoder!r}; expected one of {DECODERS}.")
    self.encoder = layers.ResNetEncoder(self.encoder_width, self.encoder_depth,
                                        self.channels, dtype=self.dtype)
    self.to_q = nn.Dense(self.channels, name="to_q")
    if self.decoder == "dense":
      size = self.map_size
      self.to_map = nn.Dense(size * size * self.channels, name="to_map")
    else:
      self.matrices = layers.FinolaMatrices(self.channels)
    self.upsampler = layers.Upsampler(self.stride, self.decoder_width, dtype=self.dtype)

  @property
  def map_size(self) -> int:
    return self.image_size // self.stride

  def encode(self, images):
    """``[B, H, W, 3]`` → ``q`` ``[B, C]`` (float32)."""
    features = self.encoder(images).astype(jnp.float32)
    return self.to_q(jnp.mean(features, axis=(1, 2)))

  def feature_map(self, q):
    """``q`` ``[B, C]`` → ``[B, H/s, W/s, C]``."""
    size = self.map_size
    if self.decoder == "dense":
      return self.to_map(q).reshape(q.shape[0], size, size, self.channels)
    return layers.unroll_matrices(
        q, self.matrices(), size, size, path=self.path,
        normalized=self.decoder == "finola", dtype=self.dtype)

  def __call__(self, images):
    return self.upsampler(self.feature_map(self.encode(images)))
