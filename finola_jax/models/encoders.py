# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""The encoders a config can name, and the one factory that builds them.

``config.encoder``:
  - ``"resnet"`` (the default, and the value of configs saved before the
    key existed): :class:`layers.ResNetEncoder` of ``encoder_width`` and
    ``encoder_depth``, ending in a 1×1 projection to the channels its model
    asks for; it returns a map ``[B, h, w, channels]``.
  - a Mobile-Former size (a key of :data:`mobile_former.SIZES`):
    :class:`mobile_former.MobileFormer` at feature stride
    :func:`encoder_stride`; it returns ``(map [B, h, w, D], tokens
    [B, T, d])`` (:func:`mobile_former.feature_dims`), and the models
    project the map themselves where they need a given width.
"""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from finola_jax.models import layers
from finola_jax.models import mobile_former

RESNET = "resnet"
ENCODERS = (RESNET,) + tuple(mobile_former.SIZES)
# The encoder keys and the values that give the ResNet models (also those of
# configs saved before the keys existed). encoder_stride None: config.stride.
ENCODER_DEFAULTS = {"encoder": RESNET, "encoder_stride": None}


def encoder_name(config) -> str:
  """``config.encoder`` (``"resnet"`` when absent)."""
  return config.get("encoder", ENCODER_DEFAULTS["encoder"])


def is_mobile_former(config) -> bool:
  return encoder_name(config) in mobile_former.SIZES


def encoder_stride(config) -> int:
  """A Mobile-Former's feature stride: ``config.encoder_stride``, or
  ``config.stride`` when it is None or absent."""
  stride = config.get("encoder_stride", ENCODER_DEFAULTS["encoder_stride"])
  return config.stride if stride is None else stride


def num_tokens(config) -> Optional[int]:
  """The tokens ``T`` the encoder returns; None for the ResNet."""
  if not is_mobile_former(config):
    return None
  return mobile_former.SIZES[encoder_name(config)].num_tokens


def map_width(config) -> int:
  """The channels of the encoder's last nonlinear map: the ResNet's last
  stage (its 1×1 projection to ``channels`` that follows is linear), a
  Mobile-Former's ``D`` (after its ReLU6). Whatever the models compute
  from that map by linear layers alone (means over positions included)
  lies in an affine space of at most this dimension."""
  if is_mobile_former(config):
    return mobile_former.feature_dims(encoder_name(config))[0]
  widths = layers.ResNetEncoder.stage_widths(config.encoder_width,
                                             config.encoder_depth)
  return widths[-1] if widths else config.encoder_width


def map_positions(config) -> int:
  """The positions ``h·w`` of the map :func:`create_encoder` returns for
  ``config.image_size`` images, read from the built encoder's traced
  output shape (nothing is computed), so it holds for every encoder."""
  encoder = create_encoder(config, channels=config.channels)
  images = jax.ShapeDtypeStruct(
      (1, config.image_size, config.image_size, 3), jnp.float32)
  output, _ = jax.eval_shape(
      lambda x: encoder.init_with_output(jax.random.PRNGKey(0), x), images)
  feature_map, _ = layers.split_encoder_output(output)
  return feature_map.shape[1] * feature_map.shape[2]


def create_encoder(config, *, channels: int,
                   downsample: Optional[int] = None) -> nn.Module:
  """The encoder ``config.encoder`` names, computing in ``config.precision``.

  Args:
    config: a model config (``encoder``, ``encoder_stride``, ``stride``,
      ``encoder_width``, ``encoder_depth``, ``precision``).
    channels: the ResNet's output channels (its final projection).
    downsample: the ResNet's halving stages (None: all ``encoder_depth``).

  Returns:
    An unbound module: ``images [B, H, W, 3]`` → ``[B, h, w, channels]``
    (ResNet) or ``([B, H/s, W/s, D], [B, T, d])`` (Mobile-Former, ``s`` =
    :func:`encoder_stride`).
  """
  dtype = jnp.dtype(config.precision)
  name = encoder_name(config)
  if name == RESNET:
    return layers.ResNetEncoder(config.encoder_width, config.encoder_depth,
                                channels, downsample=downsample, dtype=dtype)
  mobile_former.check_size(name)
  return mobile_former.MobileFormer(name, output_stride=encoder_stride(config),
                                    dtype=dtype)
