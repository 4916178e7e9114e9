# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Encoders, upsampling decoders and the learned FINOLA matrices (flax linen).

Group normalization rather than batch normalization keeps every model
stateless apart from its parameters, so one ``TrainState`` serves all.
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import Any, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

import finola_jax
from finola_jax import numerics

Dtype = Any


def _groups(channels: int) -> int:
  return math.gcd(channels, 8)


class ResidualBlock(nn.Module):
  """Residual block: (GN → swish → conv3×3) × 2 plus a shortcut of the input.

  The shortcut (a strided 1×1 convolution when the shape changes) reads the
  raw input, not its normalization: group normalization discards each
  group's mean and scale, which is the brightness and contrast an
  autoencoder has to carry through.
  """
  features: int
  strides: int = 1
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    conv = lambda f, k, s, name: nn.Conv(f, (k, k), (s, s), dtype=self.dtype,
                                         name=name)
    shortcut = x
    if self.strides != 1 or x.shape[-1] != self.features:
      shortcut = conv(self.features, 1, self.strides, "shortcut")(x)
    y = nn.swish(nn.GroupNorm(_groups(x.shape[-1]), dtype=self.dtype)(x))
    y = conv(self.features, 3, self.strides, "conv1")(y)
    y = nn.swish(nn.GroupNorm(_groups(self.features), dtype=self.dtype)(y))
    y = conv(self.features, 3, 1, "conv2")(y)
    return shortcut + y


def log2(value: int) -> int:
  """``log2`` of a power of two; a clear error otherwise."""
  if value < 1 or value & (value - 1):
    raise ValueError(f"stride must be a power of two, got {value}.")
  return value.bit_length() - 1


class ResNetEncoder(nn.Module):
  """A small ResNet: ``[B, H, W, 3] → [B, H / 2**d, W / 2**d, C]``.

  A 3×3 stem of ``width`` channels, then ``depth`` residual stages that
  double the width (capped at ``8 * width``, :meth:`stage_widths`); the
  first ``d = downsample`` of them (all by default) halve the resolution.
  A 1×1 projection to ``channels`` ends it: linear, so the output map at
  each position lies in an affine space of the last stage's width.
  """
  width: int = 32
  depth: int = 3
  channels: int = 256
  downsample: Optional[int] = None
  dtype: Dtype = jnp.float32

  @staticmethod
  def stage_widths(width: int, depth: int) -> Tuple[int, ...]:
    """The channels of each residual stage."""
    return tuple(width * min(2**(stage + 1), 8) for stage in range(depth))

  @nn.compact
  def __call__(self, images):
    downsample = self.depth if self.downsample is None else self.downsample
    if not 0 <= downsample <= self.depth:
      raise ValueError(f"downsample={downsample} must be in [0, depth={self.depth}].")
    x = nn.Conv(self.width, (3, 3), dtype=self.dtype, name="stem")(images)
    for stage, features in enumerate(self.stage_widths(self.width, self.depth)):
      x = ResidualBlock(features, strides=2 if stage < downsample else 1,
                        dtype=self.dtype)(x)
    return nn.Conv(self.channels, (1, 1), dtype=self.dtype, name="project")(nn.swish(x))


# Normalization inside the upsampler, between each hidden convolution and
# its swish: "none" (the paper's plain convolutions), "group" (GroupNorm,
# over positions and a group of channels) or "layer" (LayerNorm, over the
# channels of each position). The default is also the value of configs
# saved before the key.
UPSAMPLER_NORMS = ("none", "group", "layer")
UPSAMPLER_NORM_DEFAULTS = {"upsampler_norm": "none"}


def upsampler_norm(config) -> str:
  """``config.upsampler_norm``, with the default of configs saved before it."""
  return config.get("upsampler_norm", UPSAMPLER_NORM_DEFAULTS["upsampler_norm"])


def _fold_taps(kernel):
  """Kernel taps ``[3, ...]`` along axis 0 → ``[2, 2, ...]``: for each half
  ``a`` of a nearest ×2 upsampled line (output ``2i + a``), the summed taps
  that read each of the two input lines it sees (``i − 1 + a``, ``i + a``)."""
  return jnp.stack([jnp.stack([kernel[0], kernel[1] + kernel[2]]),
                    jnp.stack([kernel[0] + kernel[1], kernel[2]])])


def nearest_upsample_conv(x, kernel):
  """``conv3×3(nearest×2(x))``, SAME padding, computed at ``x``'s resolution.

  Output ``(2i + a, 2j + b)`` reads upsampled rows ``2i + a + {−1, 0, 1}``,
  which repeat input rows ``i − 1 + a`` and ``i + a`` (columns alike): each
  of the four phases ``(a, b)`` is a 2×2 convolution of ``x`` whose taps are
  sums of the 3×3 kernel's. One 2×2 convolution of ``x`` padded by one line,
  with the four phases' kernels side by side, computes them all, in
  ``(4/9)·(1 + 1/h)(1 + 1/w)`` of the FLOPs of convolving the upsampled
  map (0.56 at h = w = 8). The padding's zeros are the upsampled map's, so
  the values are the same up to rounding.

  Args:
    x: ``[B, h, w, C_in]``.
    kernel: ``[3, 3, C_in, F]``; its taps are summed in its own dtype, then
      cast to ``x``'s.

  Returns:
    ``[B, 2h, 2w, F]``.
  """
  batch, h, w, _ = x.shape
  features = kernel.shape[-1]
  # [b, s, a, r, C_in, F]: phase (a, b), its 2×2 taps (r, s).
  folded = _fold_taps(jnp.moveaxis(_fold_taps(kernel), 2, 0))
  phases = folded.transpose(3, 1, 4, 5, 2, 0).astype(x.dtype)
  out = jax.lax.conv_general_dilated(
      jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0))),
      phases.reshape(2, 2, x.shape[-1], features * 4), (1, 1), "VALID",
      dimension_numbers=("NHWC", "HWIO", "NHWC"))
  out = out.reshape(batch, h + 1, w + 1, features, 2, 2)
  rows = [jnp.stack([out[:, a:a + h, b:b + w, :, a, b] for b in (0, 1)], 3)
          for a in (0, 1)]
  return jnp.stack(rows, 2).reshape(batch, 2 * h, 2 * w, features)


class NearestUpsampleConv(nn.Module):
  """Nearest ×2 upsampling then a 3×3 convolution, as
  :func:`nearest_upsample_conv` computes them; the parameters are those of
  the ``nn.Conv(features, (3, 3))`` it replaces (names, shapes, initial
  values)."""
  features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (3, 3, x.shape[-1], self.features), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros_init(), (self.features,),
                      jnp.float32)
    x, bias = nn.dtypes.promote_dtype(x, bias, dtype=self.dtype)
    return nearest_upsample_conv(x, kernel) + bias


class Upsampler(nn.Module):
  """Feature map ``[B, h, w, C]`` at stride ``s`` → pixels ``[B, s·h, s·w, 3]``.

  ``log2(s)`` blocks of (nearest ×2 upsampling, conv3×3, swish; the first
  two computed together at the lower resolution,
  :func:`nearest_upsample_conv`), then three 3×3 convolutions; at ``s = 1``
  the decoder is exactly those three convolutions, as in the paper. ``norm`` puts a normalization before
  each swish: ``"group"`` a GroupNorm (``gcd(width, 8)`` groups over the
  positions), ``"layer"`` a LayerNorm over each position's channels; both
  per example, so decoding in chunks is unchanged. ``"none"`` has the
  parameters of checkpoints saved before the option.
  """
  stride: int = 1
  width: int = 64
  norm: str = "none"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, feature_map):
    if self.norm not in UPSAMPLER_NORMS:
      raise ValueError(f"Unknown upsampler norm {self.norm!r}; expected one "
                       f"of {UPSAMPLER_NORMS}.")

    # Explicit names: those nn.Conv's own numbering gave before the
    # upsampling convolutions had a module of their own (checkpoints load).
    names = (f"Conv_{i}" for i in itertools.count())

    def hidden(x, upsample=False):
      conv = NearestUpsampleConv if upsample else functools.partial(
          nn.Conv, kernel_size=(3, 3))
      x = conv(self.width, dtype=self.dtype, name=next(names))(x)
      if self.norm == "group":
        x = nn.GroupNorm(_groups(self.width), dtype=self.dtype)(x)
      elif self.norm == "layer":
        x = nn.LayerNorm(dtype=self.dtype)(x)
      return nn.swish(x)

    x = feature_map
    for _ in range(log2(self.stride)):
      x = hidden(x, upsample=True)
    x = hidden(hidden(x))
    pixels = nn.Conv(3, (3, 3), dtype=self.dtype, name=next(names))(x)
    return pixels.astype(jnp.float32) + 0.5  # centred on mid-grey


def decode_in_chunks(upsampler: Upsampler, feature_map, chunk: int):
  """``upsampler(feature_map)``, ``chunk`` examples at a time, rematerialized.

  At stride 1 the first convolution reads a ``[B, H, W, C]`` map with
  ``C ≥ 1024``: its activations and gradients are, after the map itself,
  the largest buffers of the train step. Here a loop decodes one chunk of
  the batch after another and saves nothing for the backward pass, whose
  loop recomputes each chunk's decoder and takes its vector-Jacobian
  product: one chunk's activations are alive at a time, for one more
  decoder forward pass. Values and derivatives (reverse mode, any order)
  are those of ``upsampler(feature_map)``; the parameters keep their names.

  Args:
    upsampler: the decoder, a submodule of the caller.
    feature_map: ``[B, h, w, C]``.
    chunk: examples per chunk; ``0`` (or ``≥ B``) decodes the whole batch at
      once. Chunks are the largest divisor of ``B`` not above ``chunk``.

  Returns:
    ``[B, s·h, s·w, 3]``, as ``upsampler(feature_map)``.
  """
  batch = feature_map.shape[0]
  if not chunk or chunk >= batch or upsampler.is_initializing():
    return upsampler(feature_map)
  size = max(d for d in range(1, chunk + 1) if batch % d == 0)
  unbound = upsampler.clone(parent=None)
  return _decode_chunks(unbound.apply, size, upsampler.variables, feature_map)


def _in_chunks(x, size):
  return x.reshape((x.shape[0] // size, size) + x.shape[1:])


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _decode_chunks(apply, size, variables, feature_map):
  """``apply(variables, feature_map)`` in a loop over chunks of ``size``.

  The map crosses the loops in :mod:`finola_jax.numerics`' storage view.
  """
  return numerics.with_storage_view(
      functools.partial(_decode_loop, apply, size), feature_map.dtype,
      variables, feature_map)


def _decode_loop(apply, size, variables, feature_map, *, view):
  def decode(carry, chunk_map):
    return carry, apply(variables,
                        numerics.from_storage(chunk_map, feature_map.dtype))

  _, pixels = jax.lax.scan(
      decode, None, _in_chunks(numerics.to_storage(feature_map, view), size))
  return pixels.reshape((feature_map.shape[0],) + pixels.shape[2:])


def _decode_chunks_forward(apply, size, variables, feature_map):
  return (_decode_chunks(apply, size, variables, feature_map),
          (variables, feature_map))


def _decode_chunks_backward(apply, size, residuals, cotangent):
  variables, feature_map = residuals
  return numerics.with_storage_view(
      functools.partial(_decode_backward_loop, apply, size),
      feature_map.dtype, variables, feature_map, cotangent)


def _decode_backward_loop(apply, size, variables, feature_map, cotangent, *,
                          view):
  def backward(d_variables, chunk):
    chunk_map, chunk_cotangent = chunk
    _, vjp = jax.vjp(apply, variables,
                     numerics.from_storage(chunk_map, feature_map.dtype))
    d_chunk_variables, d_chunk_map = vjp(chunk_cotangent)
    return (jax.tree_util.tree_map(jnp.add, d_variables, d_chunk_variables),
            numerics.to_storage(d_chunk_map, view))

  d_variables, d_map = jax.lax.scan(
      backward, jax.tree_util.tree_map(jnp.zeros_like, variables),
      (_in_chunks(numerics.to_storage(feature_map, view), size),
       _in_chunks(cotangent, size)), reverse=True)
  return d_variables, numerics.from_storage(d_map.reshape(feature_map.shape),
                                            feature_map.dtype)


_decode_chunks.defvjp(_decode_chunks_forward, _decode_chunks_backward)


# How A and B start (FinolaMatrices), and the matrix keys with the values of
# configs saved before they existed.
MATRIX_INITS = ("normal", "skew")
MATRIX_DEFAULTS = {"matrix_init_damping": 0.0, "matrix_init": "normal"}


class FinolaMatrices(nn.Module):
  """The shared ``C×C`` matrices ``A`` and ``B``, one pair per path.

  ``init_kind`` (one of ``MATRIX_INITS``), with ``G ~ N(0, init_scale² / C)``
  per entry:
    - ``"normal"``: ``G − init_damping · I``, so that one step ``A ẑ`` of a
      normalized ``ẑ`` changes each channel by about ``init_scale``. A
      positive ``init_damping`` δ shifts the eigenvalues of the symmetric
      parts of A and B down by δ (all negative once δ exceeds the random
      part's largest, about √2·``init_scale``): a FINOLA step then shrinks
      the centred part of z by about δ per channel on average, so its
      spread settles instead of growing with the distance walked.
    - ``"skew"``: ``(G − Gᵀ)/√2 − init_damping · I``: the same variance off
      the diagonal, and no symmetric part but the damping's. Undamped,
      ``ẑᵀAẑ = 0``, so a step turns the centred part of z rather than
      stretching it (its size grows only at second order, ``|Aẑ|²``), and
      with ``init_scale`` near 1 the map varies quickly over the positions
      from the first step without |z| growing.
  (docs/results/study.md.) One path gives ``[C, C]`` matrices (the
  parameters of single-path checkpoints); ``paths = M > 1`` gives
  ``[M, C, C]`` stacks.
  """
  channels: int
  init_scale: float = 0.1
  paths: int = 1
  init_damping: float = 0.0
  init_kind: str = "normal"

  @nn.compact
  def __call__(self):
    if self.init_kind not in MATRIX_INITS:
      raise ValueError(f"Unknown init_kind {self.init_kind!r}; expected one "
                       f"of {MATRIX_INITS}.")
    normal = nn.initializers.normal(self.init_scale / math.sqrt(self.channels))

    def init(key, shape, dtype=jnp.float32):
      random = normal(key, shape, dtype)
      if self.init_kind == "skew":
        random = (random - jnp.swapaxes(random, -1, -2)) / math.sqrt(2.0)
      return random - self.init_damping * jnp.eye(self.channels, dtype=dtype)

    shape = (self.channels, self.channels)
    if self.paths > 1:
      shape = (self.paths,) + shape
    return self.param("A", init, shape), self.param("B", init, shape)


def matrix_init(config) -> str:
  """``config.matrix_init``, with the default of configs saved before it."""
  return config.get("matrix_init", MATRIX_DEFAULTS["matrix_init"])


def finola_matrices(config, paths: int) -> FinolaMatrices:
  """The model's :class:`FinolaMatrices` from its config."""
  damping = config.get("matrix_init_damping",
                       MATRIX_DEFAULTS["matrix_init_damping"])
  return FinolaMatrices(config.channels, config.matrix_init_scale, paths,
                        damping, matrix_init(config))


def matrix_metrics(params) -> dict:
  """``finola_jax.matrix_statistics`` of a model's ``matrices`` parameters
  (``{}`` for a model without them)."""
  if "matrices" not in params:
    return {}
  return finola_jax.matrix_statistics(params["matrices"]["A"],
                                      params["matrices"]["B"])


# Ways to make the M initial vectors and to combine the M unrolled maps.
POOLINGS = ("mean", "attention", "tokens", "flatten")
# The poolings whose q is the encoder's last map through linear layers only
# (autoencoder.code_rank_bound).
LINEAR_POOLINGS = ("mean", "flatten")
COMBINES = ("mean", "concat")
# The multi-path keys and the values that give the single-path model (also
# the values of configs saved before the keys existed).
MULTIPATH_DEFAULTS = {"paths": 1, "pooling": "mean", "combine": "mean"}


def multipath(config) -> Tuple[int, str, str]:
  """``(paths, pooling, combine)`` of a config, with the single-path defaults."""
  return tuple(config.get(key, default)
               for key, default in MULTIPATH_DEFAULTS.items())


# How q's size is bounded (InitialVectors): "none", as pooled. The default
# is also the value of configs saved before the key.
Q_NORMS = ("none", "rms", "cap")
Q_NORM_DEFAULTS = {"q_norm": "none"}


def q_norm(config) -> str:
  """``config.q_norm``, with the default of configs saved before it."""
  return config.get("q_norm", Q_NORM_DEFAULTS["q_norm"])


class PerPositionDense(nn.Module):
  """``[B, h, w, F] → [B, K]``: ``(1/P) Σ_p x_p W_p + b`` over the ``P = h·w``
  positions, each with its own ``W_p`` ``[F, K]`` (parameter ``kernel``
  ``[P, F, K]``).

  Every ``W_p`` starts as one shared matrix, so that at initialization this
  is the mean over positions followed by a dense layer; the ``1/P`` keeps
  it so in training. Why: Adam moves each weight by about the learning
  rate whatever its gradient, so the plain dense layer over the ``P·F``
  flattened inputs moves its output about P times faster than the mean's
  ``F`` weights do, and on the main job that collapsed the run (the 2×
  rate's signature, docs/results/study.md).
  """
  features: int

  @nn.compact
  def __call__(self, feature_map):
    batch, height, width, channels = feature_map.shape
    positions = height * width
    shared = nn.initializers.lecun_normal()

    def init(key, shape, dtype=jnp.float32):
      return jnp.broadcast_to(shared(key, shape[1:], dtype), shape)

    kernel = self.param("kernel", init, (positions, channels, self.features))
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    flat = feature_map.reshape(batch, positions, channels)
    return jnp.einsum("bpf,pfk->bk", flat, kernel) / positions + bias


class InitialVectors(nn.Module):
  """The M initial vectors ``q`` ``[B, M, C]`` from the encoder's output.

  ``pooling``:
    - ``"mean"``: the mean of the feature map over its positions, then one
      dense layer to ``M·C`` (with ``M = 1``, today's ``to_q``);
    - ``"attention"``: M learned queries cross-attend over the positions of
      the feature map (the paper's attention pooling);
    - ``"tokens"``: the first M of the encoder's ``tokens`` ``[B, T, d]``
      (Mobile-Former's global tokens), each through one shared dense layer
      ``d → C``: token m is path m's initial vector (``M ≤ T``);
    - ``"flatten"``: one dense layer from the whole map (``h·w·F → M·C``,
      :class:`PerPositionDense`): unlike the others it knows where each
      feature is, which a mean over positions discards
      (docs/results/study.md, "Where the encoder loses"); its weights fix
      ``h×w``, so the images' size, and grow with it: for small crops, not
      the paper's 256×256.

  ``norm`` (one of ``Q_NORMS``) bounds the size of each q_m, with
  ``rms(q) = √(mean_c q_c² + ε)``:
    - ``"rms"``: ``q_m ← γ_m ⊙ q_m / rms(q_m)``, ``γ`` ``[M, C]`` learned
      (parameter ``q_scale``, initialized to ones);
    - ``"cap"``: ``q_m ← q_m / max(1, rms(q_m))``: unchanged while its RMS
      is at most ẑ's (1), scaled down to it otherwise; no parameter.
  Why: FINOLA's increments ``A ẑ`` have a size set by ``A`` alone (ẑ has
  norm √C), so when q outgrows them the map is nearly q everywhere
  (docs/results/study.md).

  Use it with ``nn.share_scope`` so that its parameters (``to_q``, or
  ``queries`` and ``pool``) sit at the parent's top level, where
  single-path checkpoints keep ``to_q``.
  """
  channels: int
  paths: int = 1
  pooling: str = "mean"
  norm: str = "none"

  @nn.compact
  def __call__(self, feature_map, tokens=None):
    """``feature_map`` ``[B, h, w, F]``, ``tokens`` ``[B, T, d]`` or None."""
    q = self._pool(feature_map, tokens)
    if self.norm == "none":
      return q
    if self.norm not in Q_NORMS:
      raise ValueError(f"Unknown norm {self.norm!r}; expected one of "
                       f"{Q_NORMS}.")
    rms = jnp.sqrt(jnp.mean(jnp.square(q), axis=-1, keepdims=True) + 1e-6)
    if self.norm == "cap":
      return q / jnp.maximum(rms, 1.0)
    scale = self.param("q_scale", nn.initializers.ones,
                       (self.paths, self.channels))
    return scale * q / rms

  def _pool(self, feature_map, tokens):
    feature_map = feature_map.astype(jnp.float32)
    batch = feature_map.shape[0]
    if self.pooling == "mean":
      pooled = jnp.mean(feature_map, axis=(1, 2))
      q = nn.Dense(self.paths * self.channels, name="to_q")(pooled)
      return q.reshape(batch, self.paths, self.channels)
    if self.pooling == "flatten":
      q = PerPositionDense(self.paths * self.channels, name="to_q")(
          feature_map)
      return q.reshape(batch, self.paths, self.channels)
    if self.pooling == "tokens":
      if tokens is None:
        raise ValueError("pooling='tokens' needs the encoder's tokens "
                         "[B, T, d]; this encoder returned none.")
      if self.paths > tokens.shape[1]:
        raise ValueError(f"pooling='tokens' takes one token per path: "
                         f"paths={self.paths} > the encoder's "
                         f"{tokens.shape[1]} tokens.")
      return nn.Dense(self.channels, name="to_q")(
          tokens[:, :self.paths].astype(jnp.float32))
    if self.pooling != "attention":
      raise ValueError(f"Unknown pooling {self.pooling!r}; expected one of "
                       f"{POOLINGS}.")
    context = feature_map.reshape(batch, -1, feature_map.shape[-1])
    queries = self.param("queries", nn.initializers.normal(1.0),
                         (self.paths, self.channels))
    attention = nn.MultiHeadDotProductAttention(
        num_heads=_groups(self.channels), qkv_features=self.channels,
        out_features=self.channels, name="pool")
    return attention(jnp.broadcast_to(queries, (batch,) + queries.shape),
                     context)


def split_encoder_output(output):
  """``(feature_map, tokens or None)`` of an encoder's output.

  Encoders return a map ``[B, h, w, F]`` or ``(map, tokens [B, T, d])``.
  """
  if isinstance(output, tuple):
    feature_map, tokens = output
    return feature_map, tokens
  return output, None


def combine_paths(maps, combine: str):
  """The M unrolled maps ``[B, M, H, W, C]`` as one map the decoder reads.

  ``"mean"``: ``[B, H, W, C]``; ``"concat"``: ``[B, H, W, M·C]`` with
  channel ``m·C + c`` holding path ``m``'s channel ``c``.
  """
  if combine == "mean":
    return jnp.mean(maps, axis=1)
  if combine == "concat":
    batch, paths, height, width, channels = maps.shape
    return jnp.moveaxis(maps, 1, -2).reshape(batch, height, width,
                                             paths * channels)
  raise ValueError(f"Unknown combine {combine!r}; expected one of {COMBINES}.")


AUTOREGRESSIONS = ("finola", "linear")


def check_autoregression(kind: str) -> bool:
  """Returns ``normalized`` for an autoregression kind ('finola'/'linear')."""
  if kind not in AUTOREGRESSIONS:
    raise ValueError(f"Unknown autoregression {kind!r}; expected one of "
                     f"{AUTOREGRESSIONS}.")
  return kind == "finola"


def autoregress(function, x, matrices, height: int, width: int, *,
                config, normalized: bool, **options):
  """``function(x, A, B, height, width, ...)`` for ``finola_jax.unroll`` or
  ``finola_jax.extrapolate``, in the config's compute dtype and precision.

  The one place the models call the core: ``config.matmul_precision`` (None
  for JAX's default) and ``config.unroll_implementation`` ("auto", "xla" or
  "pallas") reach every walk step from here.
  """
  dtype = jnp.dtype(config.precision)
  A, B = matrices
  return function(x.astype(dtype), A.astype(dtype), B.astype(dtype),
                  height, width, normalized=normalized,
                  precision=config.matmul_precision,
                  implementation=config.unroll_implementation, **options)
