# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Image → one vector q → feature map → image (the paper's experiment 1)."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

import finola_jax
from finola_jax.models import layers

DECODERS = ("finola", "linear", "dense")


class Autoencoder(nn.Module):
  """Encodes an image into ``q ∈ R^C`` and decodes it back.

  ``config.decoder``:
    - ``"finola"``: ``finola_jax.unroll`` of ``q`` from the centre of an
      ``(H/s)×(W/s)`` map with the learned ``A``, ``B``;
    - ``"linear"``: the same without normalization (QB-Heat);
    - ``"dense"``: ``q`` → dense layer → the map (no autoregression).
  The map is turned into pixels by :class:`layers.Upsampler` (three 3×3
  convolutions at ``s = 1``). The config keys read are those of
  ``experiments/configs/reconstruct.py``'s model and numerics sections.
  """
  config: ml_collections.FrozenConfigDict

  def setup(self):
    config = self.config
    if config.decoder not in DECODERS:
      raise ValueError(f"Unknown decoder {config.decoder!r}; expected one of "
                       f"{DECODERS}.")
    dtype = jnp.dtype(config.precision)
    self.encoder = layers.ResNetEncoder(config.encoder_width, config.encoder_depth,
                                        config.channels, dtype=dtype)
    self.to_q = nn.Dense(config.channels, name="to_q")
    if config.decoder == "dense":
      size = self.map_size
      self.to_map = nn.Dense(size * size * config.channels, name="to_map")
    else:
      self.matrices = layers.FinolaMatrices(config.channels,
                                            config.matrix_init_scale)
    self.upsampler = layers.Upsampler(config.stride, config.decoder_width,
                                      dtype=dtype)

  @property
  def map_size(self) -> int:
    return self.config.image_size // self.config.stride

  def encode(self, images):
    """``[B, H, W, 3]`` → ``q`` ``[B, C]`` (float32)."""
    features = self.encoder(images).astype(jnp.float32)
    return self.to_q(jnp.mean(features, axis=(1, 2)))

  def feature_map(self, q):
    """``q`` ``[B, C]`` → ``[B, H/s, W/s, C]``."""
    size = self.map_size
    if self.config.decoder == "dense":
      return self.to_map(q).reshape(q.shape[0], size, size, self.config.channels)
    return layers.autoregress(
        finola_jax.unroll, q, self.matrices(), size, size, config=self.config,
        normalized=self.config.decoder == "finola", path=self.config.path)

  def __call__(self, images):
    return self.upsampler(self.feature_map(self.encode(images)))
