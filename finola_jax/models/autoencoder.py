# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Image → one vector q → feature map → image (the paper's experiment 1)."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

import finola_jax
from finola_jax.models import encoders
from finola_jax.models import layers

DECODERS = ("finola", "linear", "dense")


def code_size(config) -> int:
  """The numbers of q: ``paths × channels`` (M·C)."""
  return layers.multipath(config)[0] * config.channels


def code_rank_bound(config) -> int:
  """How many dimensions the ``M·C`` numbers of q can span over all images.

  With ``pooling="mean"`` each q is the encoder's last nonlinear map
  (:func:`encoders.map_width` channels, F) through linear layers only (the
  ResNet's 1×1 projection, the mean over positions, ``to_q``), so the q's
  lie in an affine space of dimension at most F, whatever ``paths`` and C
  are; with ``"flatten"`` the same holds of the whole map, ``h·w·F``
  numbers (:func:`encoders.map_positions`). ``q_norm`` rescales each
  path's q by its own factor, so that each path spans at most one
  dimension more (its affine space's linear span). With ``"attention"``
  or ``"tokens"`` no bound below ``M·C`` is claimed. A PCA code of ``M·C``
  components compares fairly only when this is ``M·C``: widen the encoder
  (ResNet: ``encoder_width ≥ M·C / 8``) or flatten to lift it.
  """
  paths, pooling, _ = layers.multipath(config)
  size = code_size(config)
  if pooling not in layers.LINEAR_POOLINGS:
    return size
  width = encoders.map_width(config)
  if pooling == "flatten":
    width *= encoders.map_positions(config)
  if layers.q_norm(config) != "none":
    return min(size, paths * (width + 1))
  return min(size, width)


class Autoencoder(nn.Module):
  """Encodes an image into M vectors ``q ∈ R^C`` and decodes it back.

  ``config.encoder`` names the encoder (:mod:`encoders`); ``config.pooling``
  makes the M = ``config.paths`` initial vectors from its last map, or from
  a Mobile-Former's tokens, and ``config.q_norm`` bounds their size
  (:class:`layers.InitialVectors`).
  ``config.decoder``:
    - ``"finola"``: ``finola_jax.unroll`` of each ``q_m`` from the centre of
      an ``(H/s)×(W/s)`` map with its own learned ``A_m``, ``B_m`` (all
      paths in one call, ``finola_jax.unroll_paths``);
    - ``"linear"``: the same without normalization (QB-Heat);
    - ``"dense"``: ``q_m`` → one dense layer, shared by the paths → a map
      (no autoregression).
  ``config.combine`` joins the M maps (``"mean"``, or ``"concat"``: the
  decoder reads ``M·C`` channels). The map is turned into pixels by
  :class:`layers.Upsampler` (three 3×3 convolutions at ``s = 1``). With one
  path the parameters are those of single-path checkpoints (``to_q``,
  ``matrices/A``, ``matrices/B`` ``[C, C]``). The config keys read are
  those of ``experiments/configs/reconstruct.py``'s model and numerics
  sections.
  """
  config: ml_collections.FrozenConfigDict

  def setup(self):
    config = self.config
    if config.decoder not in DECODERS:
      raise ValueError(f"Unknown decoder {config.decoder!r}; expected one of "
                       f"{DECODERS}.")
    paths, pooling, _ = layers.multipath(config)
    dtype = jnp.dtype(config.precision)
    self.encoder = encoders.create_encoder(config, channels=config.channels)
    self.initial_vectors = layers.InitialVectors(config.channels, paths,
                                                 pooling,
                                                 layers.q_norm(config))
    nn.share_scope(self, self.initial_vectors)
    if config.decoder == "dense":
      size = self.map_size
      self.to_map = nn.Dense(size * size * config.channels, name="to_map")
    else:
      self.matrices = layers.finola_matrices(config, paths)
    self.upsampler = layers.Upsampler(config.stride, config.decoder_width,
                                      layers.upsampler_norm(config),
                                      dtype=dtype)

  @property
  def map_size(self) -> int:
    return self.config.image_size // self.config.stride

  def encode(self, images):
    """``[B, H, W, 3]`` → ``q`` ``[B, C]`` with one path, else ``[B, M, C]``
    (float32)."""
    feature_map, tokens = layers.split_encoder_output(self.encoder(images))
    q = self.initial_vectors(feature_map, tokens)
    return q[:, 0] if q.shape[1] == 1 else q

  def path_maps(self, q):
    """``q`` (as :meth:`encode` returns it) → the maps ``[B, M, H/s, W/s, C]``."""
    q = q[:, None] if q.ndim == 2 else q
    size = self.map_size
    if self.config.decoder == "dense":
      return self.to_map(q).reshape(q.shape[:2] + (size, size,
                                                   self.config.channels))
    normalized = self.config.decoder == "finola"
    A, B = self.matrices()
    if A.ndim == 2:
      return layers.autoregress(
          finola_jax.unroll, q[:, 0], (A, B), size, size, config=self.config,
          normalized=normalized, path=self.config.path)[:, None]
    return layers.autoregress(
        finola_jax.unroll_paths, q, (A, B), size, size, config=self.config,
        normalized=normalized, path=self.config.path)

  def feature_map(self, q):
    """``q`` → the map the decoder reads, ``[B, H/s, W/s, C]`` (``M·C`` with
    ``combine="concat"``)."""
    return layers.combine_paths(self.path_maps(q),
                                layers.multipath(self.config)[2])

  def reconstruct_with_maps(self, images):
    """``(pixels [B, H, W, 3], path maps [B, M, H/s, W/s, C])``."""
    maps = self.path_maps(self.encode(images))
    feature_map = layers.combine_paths(maps, layers.multipath(self.config)[2])
    return (layers.decode_in_chunks(self.upsampler, feature_map,
                                    self.config.decoder_chunk), maps)

  def __call__(self, images):
    return self.reconstruct_with_maps(images)[0]
