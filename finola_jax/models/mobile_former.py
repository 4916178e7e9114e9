# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Mobile-Former (Chen et al., arXiv 2108.05895) in flax linen.

Two branches run side by side:

* **Mobile**: a MobileNet of inverted-residual blocks over the feature map
  ``[B, H, W, C]``, whose activations are dynamic ReLUs
  ``max(a₁ x, a₂ x)`` with per-channel slopes computed from the first global
  token (:func:`dynamic_relu`, :class:`DynamicReLU`).
* **Former**: a small transformer over ``T`` learned global tokens
  ``[B, T, d]`` (3 to 6 tokens of 128 to 192 dims).

Every block joins them with two light cross-attention bridges (2 heads,
no key/value projection on the map side):

* Mobile→Former (:class:`MobileToFormer`): each token queries the map,
  ``tokens ← LN(tokens + W_o[(2 σ_h(W_α tokens)) ⊙ Attn(W_q tokens, X, X)])``
  where the map ``X`` ``[B, HW, C]`` is both keys and values;
* Former→Mobile (:class:`FormerToMobile`): each position queries the
  tokens, ``X ← X + Attn(X, W_k tokens, W_v tokens)``.

A block is: Mobile→Former on its input map, one Former layer on the tokens,
the convolutions (whose dynamic ReLUs read the updated first token), then
Former→Mobile on its output map. After the last block one more
Mobile→Former bridge updates the tokens from the last map, and a 1×1
convolution (``6 C`` channels, ReLU6) makes the feature map that the
published classifier pools.

Block layouts (the authors' code, all sizes): ``lite`` (the first block:
depthwise 3×3 with channel multiplier ``e``, ReLU6, pointwise; no bridges),
``inverted`` (pointwise ×``e`` → depthwise → pointwise, dynamic ReLU after the
first two) and ``down`` (the downsampling block: depthwise ×``e`` (strided) →
pointwise → depthwise ×``e₂`` → pointwise, dynamic ReLU after each depthwise
and a residual around the second pair). ``Attn`` is softmax attention with
scale ``(C / heads)^-½``; the Former layer (4 heads, keys = values = tokens,
post-norm) is followed by a 2× GELU feed-forward layer.

Choices of this implementation:

* **Normalization.** The paper puts a batch normalization after every
  convolution (and after the classifier's hidden dense layer). Here each
  is a group normalization (:class:`GroupNorm`, ``gcd(C, 8)`` groups, the
  rule of :mod:`finola_jax.models.layers`): the same parameters (a scale
  and a bias per channel), hence the same parameter count, but no running
  statistics. The project's models hold nothing but parameters, so that
  one ``TrainState`` and one train step serve every model, and masked
  pre-training (which encodes one quadrant) needs no batch-statistics
  bookkeeping. A group norm costs about 5 elementwise operations per
  value where a batch norm folds into its convolution at inference; XLA's
  count includes them (with flax's ``GroupNorm``, 6 per value, the 26M
  size would count 28.9 M multiply-adds, +11 %; with :class:`GroupNorm`,
  28.3 M).
* **Small images.** ``output_stride`` (32, as published, down to 1) turns
  the first stride-2 layers into stride-1 layers, the stem first, then the
  earliest downsampling blocks, so a 32×32 image keeps a usable map:
  ``output_stride=8`` gives 4×4 and ``output_stride=4`` 8×8. Attention
  bridges do not depend on the map size, so no other change is needed.
* **Head.** :meth:`MobileFormer.classify` adds the published classifier
  (pooled map ⊕ first token → dense → norm → h-swish → 1000 classes). Its
  parameters exist only in variables initialized through ``classify``; they
  are there to compare parameter counts with the paper.
* Initialization follows the authors' code: convolutions He-normal over
  fan-out, dense layers ``N(0, 0.01²)`` with zero biases (so every dynamic
  ReLU starts as a ReLU), tokens ``N(0, 1)``.
* Computation in ``dtype`` (bfloat16 on accelerators), parameters float32;
  the softmaxes of 16-bit computations in float32.

Shapes (``__call__``): ``feature_map`` ``[B, H / s, W / s, D]`` with
``D = 6 × (last block's channels)`` and ``tokens`` ``[B, T, d]``; see
:func:`feature_dims`. At ``s = 32``, 224×224 images give 7×7 maps.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Dict, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any

_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
_dense_init = nn.initializers.normal(0.01)
BRIDGE_HEADS = 2
FORMER_HEADS = 4
HYPER_REDUCTION = 4  # Hidden width of a dynamic ReLU's MLP: token_dim / 4.
HEAD_EXPANSION = 6  # Channels of the final 1×1 convolution per input channel.
BLOCK_KINDS = ("lite", "inverted", "down")


@dataclasses.dataclass(frozen=True)
class Block:
  """One block: ``kind`` in :data:`BLOCK_KINDS`.

  ``expansion`` is the (first) expansion ratio, ``channels`` the output
  channels, ``stride`` the published stride and ``expansion2`` the second
  depthwise's ratio of a ``down`` block.
  """
  kind: str
  expansion: int
  channels: int
  stride: int
  expansion2: int = 0

  def __post_init__(self):
    if self.kind not in BLOCK_KINDS:
      raise ValueError(f"Unknown block kind {self.kind!r}; expected one of "
                       f"{BLOCK_KINDS}.")


@dataclasses.dataclass(frozen=True)
class Size:
  """A Mobile-Former size: stem width, blocks, tokens and head width."""
  stem: int
  blocks: Tuple[Block, ...]
  num_tokens: int
  token_dim: int
  head_features: int
  groups: int = 1  # Groups of the pointwise convolutions (with shuffles).


def _blocks(*rows):
  return tuple(Block(*row) for row in rows)


_MEDIUM = lambda c1, c2, c3, c4, c5, e3, e5: _blocks(  # 151M to 508M.
    ("lite", 2, c1, 1), ("down", 6, c2, 2, 4), ("inverted", e3, c2, 1),
    ("down", 6, c3, 2, 4), ("inverted", e5, c3, 1), ("down", 6, c4, 2, 4),
    ("inverted", 4, c4, 1), ("inverted", 6, c5[0], 1),
    ("inverted", 6, c5[0], 1), ("down", 6, c5[1], 2, 4),
    ("inverted", 6, c5[1], 1), ("inverted", 6, c5[1], 1))
_SMALL = _blocks(  # 26M and 52M.
    ("lite", 3, 12, 2), ("inverted", 3, 12, 1), ("down", 6, 24, 2, 4),
    ("inverted", 3, 24, 1), ("down", 6, 48, 2, 4), ("inverted", 4, 48, 1),
    ("inverted", 6, 64, 1), ("down", 6, 96, 2, 4), ("inverted", 6, 96, 1))

# The published sizes (named by their multiply-adds at 224×224) and one tiny
# size, not from the paper, for tests and CPU demonstrations.
SIZES: Dict[str, Size] = {
    "mobile_former_508m": Size(24, _MEDIUM(24, 40, 72, 128, (176, 240), 3, 3),
                               6, 192, 1920),
    "mobile_former_294m": Size(16, _MEDIUM(16, 24, 48, 96, (128, 192), 4, 4),
                               6, 192, 1920),
    "mobile_former_214m": Size(12, _MEDIUM(12, 20, 40, 80, (112, 160), 3, 4),
                               6, 192, 1600),
    "mobile_former_151m": Size(12, _MEDIUM(12, 16, 32, 64, (88, 128), 3, 3),
                               6, 192, 1280),
    "mobile_former_96m": Size(12, _blocks(
        ("lite", 2, 12, 1), ("down", 6, 16, 2, 4), ("down", 6, 32, 2, 4),
        ("inverted", 3, 32, 1), ("down", 6, 64, 2, 4), ("inverted", 4, 64, 1),
        ("inverted", 6, 88, 1), ("down", 6, 128, 2, 4),
        ("inverted", 6, 128, 1)), 4, 128, 1280),
    "mobile_former_52m": Size(8, _SMALL, 3, 128, 1024),
    "mobile_former_26m": Size(8, _SMALL, 3, 128, 1024, groups=4),
    "mobile_former_tiny": Size(8, _blocks(
        ("lite", 2, 8, 2), ("down", 3, 12, 2, 2), ("inverted", 3, 12, 1),
        ("down", 3, 16, 2, 2), ("down", 3, 24, 2, 2)), 2, 16, 64),
}
# Published parameters (millions, 1000-class head included, 224×224).
PUBLISHED_PARAMS = {"mobile_former_508m": 14.0, "mobile_former_294m": 11.4,
                    "mobile_former_214m": 9.4, "mobile_former_151m": 7.6,
                    "mobile_former_96m": 4.6, "mobile_former_52m": 3.5,
                    "mobile_former_26m": 3.2}
# Published multiply-adds (millions) at 224×224: the number in the name.
PUBLISHED_MADDS = {name: int(name.split("_")[-1][:-1])
                   for name in PUBLISHED_PARAMS}


def check_size(size: str) -> Size:
  """``SIZES[size]``; a clear error for an unknown name."""
  if size not in SIZES:
    raise ValueError(f"Unknown Mobile-Former size {size!r}; expected one of "
                     f"{tuple(SIZES)}.")
  return SIZES[size]


def native_stride(size: str) -> int:
  """The published feature stride of ``size`` (32 for every size here)."""
  spec = check_size(size)
  return 2 * math.prod(block.stride for block in spec.blocks)


def feature_dims(size: str) -> Tuple[int, int]:
  """``(D, d)``: channels of the feature map and of a token."""
  spec = check_size(size)
  return HEAD_EXPANSION * spec.blocks[-1].channels, spec.token_dim


def hard_sigmoid(x):
  """``relu6(x + 3) / 6``."""
  return jax.nn.relu6(x + 3.0) / 6.0


def hard_swish(x):
  """``x · relu6(x + 3) / 6``."""
  return x * hard_sigmoid(x)


def dynamic_relu(x, coefficients):
  """``max(a₁ x, a₂ x)`` per channel, the slopes from ``coefficients``.

  Args:
    x: ``[B, ..., C]``.
    coefficients: ``[B, 2C]`` in ``[0, 1]`` (a hard sigmoid's output):
      ``(c₁, c₂)`` along the last axis, giving ``a₁ = 2 c₁ ∈ [0, 2]`` and
      ``a₂ = 2 c₂ − 1 ∈ [−1, 1]``, so ``c = ½`` is a plain ReLU.

  Returns:
    ``[B, ..., C]``.
  """
  channels = x.shape[-1]
  if coefficients.shape != (x.shape[0], 2 * channels):
    raise ValueError(f"coefficients {coefficients.shape} must be "
                     f"[B, 2C] = {(x.shape[0], 2 * channels)} for x {x.shape}.")
  coefficients = coefficients.reshape(
      (x.shape[0],) + (1,) * (x.ndim - 2) + (2 * channels,)).astype(x.dtype)
  slope1, slope2 = jnp.split(coefficients, 2, axis=-1)
  return jnp.maximum(x * (2.0 * slope1), x * (2.0 * slope2 - 1.0))


def _dense(features: int, dtype: Dtype, name=None):
  return nn.Dense(features, dtype=dtype, kernel_init=_dense_init, name=name)


def channel_shuffle(x, groups: int):
  """``[..., C]``: channel ``g·(C/groups) + i`` moves to ``i·groups + g``."""
  if groups == 1:
    return x
  shape = x.shape
  x = x.reshape(shape[:-1] + (groups, shape[-1] // groups))
  return jnp.swapaxes(x, -1, -2).reshape(shape)


def attention(queries, keys, values, heads: int):
  """Multi-head softmax attention, no projections.

  Channels split into ``heads`` contiguous groups; scale
  ``(C / heads)^-½``; softmax over the ``L_k`` keys (float32 for 16-bit
  inputs).

  Args:
    queries: ``[B, L_q, C]``.
    keys: ``[B, L_k, C]``.
    values: ``[B, L_k, C_v]``.
    heads: divides ``C`` and ``C_v``.

  Returns:
    ``[B, L_q, C_v]``.
  """
  if queries.shape[-1] % heads or values.shape[-1] % heads:
    raise ValueError(f"{heads} heads must divide the channels of queries "
                     f"{queries.shape} and values {values.shape}.")
  split = lambda x: x.reshape(x.shape[:-1] + (heads, x.shape[-1] // heads))
  low_precision = jnp.dtype(queries.dtype).itemsize < 4
  out = nn.dot_product_attention(split(queries), split(keys), split(values),
                                 force_fp32_for_softmax=low_precision)
  return out.reshape(out.shape[:-2] + (-1,))


class DynamicReLU(nn.Module):
  """:func:`dynamic_relu` of ``x`` with slopes from the first token.

  ``c = σ_h(W₂ relu(W₁ t₀ + b₁) + b₂)``, ``W₁``: ``d → d / 4``,
  ``W₂``: ``d / 4 → 2C``; ``x`` ``[B, H, W, C]``, ``tokens`` ``[B, T, d]``.
  """
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, tokens):
    dense = lambda f, name: _dense(f, self.dtype, name)
    hidden = nn.relu(dense(tokens.shape[-1] // HYPER_REDUCTION, "squeeze")(
        tokens[:, 0]))
    coefficients = hard_sigmoid(dense(2 * x.shape[-1], "expand")(hidden))
    return dynamic_relu(x, coefficients)


class MobileToFormer(nn.Module):
  """Bridge Mobile→Former: the tokens attend to the map (keys = values).

  ``tokens ← LN(tokens + W_o[2 σ_h(W_α tokens) ⊙ Attn(W_q tokens, X, X)])``;
  ``feature_map`` ``[B, H, W, C]``, ``tokens`` ``[B, T, d]`` → ``[B, T, d]``.
  """
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, feature_map, tokens):
    channels = feature_map.shape[-1]
    dense = lambda f, name: _dense(f, self.dtype, name)
    pixels = feature_map.reshape(feature_map.shape[0], -1, channels)
    attended = attention(dense(channels, "query")(tokens), pixels, pixels,
                         BRIDGE_HEADS)
    gate = 2.0 * hard_sigmoid(dense(channels, "gate")(tokens))
    update = dense(tokens.shape[-1], "project")(gate * attended)
    return nn.LayerNorm(dtype=self.dtype, name="norm")(tokens + update)


class FormerToMobile(nn.Module):
  """Bridge Former→Mobile: every position attends to the tokens.

  ``X ← X + Attn(X, W_k tokens, W_v tokens)``; ``feature_map``
  ``[B, H, W, C]``, ``tokens`` ``[B, T, d]`` → ``[B, H, W, C]``.
  """
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, feature_map, tokens):
    batch, height, width, channels = feature_map.shape
    dense = lambda name: _dense(channels, self.dtype, name)
    pixels = feature_map.reshape(batch, height * width, channels)
    update = attention(pixels, dense("key")(tokens), dense("value")(tokens),
                       BRIDGE_HEADS)
    return feature_map + update.reshape(feature_map.shape).astype(
        feature_map.dtype)


class Former(nn.Module):
  """One post-norm transformer layer over the tokens ``[B, T, d]``.

  Self-attention with a query projection only (keys = values = tokens),
  then a ``d → 2d → d`` GELU feed-forward layer, each ``LN(x + f(x))``.
  """
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, tokens):
    dim = tokens.shape[-1]
    dense = lambda f, name: _dense(f, self.dtype, name)
    attended = attention(dense(dim, "query")(tokens), tokens, tokens,
                         FORMER_HEADS)
    tokens = nn.LayerNorm(dtype=self.dtype, name="attention_norm")(
        tokens + dense(dim, "mix")(attended))
    hidden = nn.gelu(dense(2 * dim, "ffn_in")(tokens), approximate=False)
    return nn.LayerNorm(dtype=self.dtype, name="ffn_norm")(
        tokens + dense(dim, "ffn_out")(hidden))


class GroupNorm(nn.Module):
  """Group normalization of ``[B, ..., C]`` in ``gcd(C, 8)`` groups.

  The function of ``flax.linen.GroupNorm`` (same parameters ``scale`` and
  ``bias`` ``[C]``, same ``eps``, statistics in at least float32), applied
  as one multiply-add ``x · m + c`` with per-example, per-channel
  ``m = scale / sqrt(var + eps)`` and ``c = bias − mean · m``: 5 operations
  per element (square, two sums, multiply, add) against flax's 6, a sixth
  of the elementwise work of every normalization in this network.
  """
  eps: float = 1e-6
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    channels = x.shape[-1]
    groups = math.gcd(channels, 8)
    scale = self.param("scale", nn.initializers.ones, (channels,))
    bias = self.param("bias", nn.initializers.zeros, (channels,))
    grouped = x.reshape(x.shape[0], -1, groups, channels // groups)
    axes, stats_dtype = (1, 3), jnp.promote_types(self.dtype, jnp.float32)
    mean = jnp.mean(grouped, axes, dtype=stats_dtype)
    mean_square = jnp.mean(jnp.square(grouped), axes, dtype=stats_dtype)
    variance = jnp.maximum(mean_square - jnp.square(mean), 0.0)
    inverse = jax.lax.rsqrt(variance + self.eps)  # [B, groups]
    multiplier = (inverse[:, :, None] * scale.reshape(groups, -1)).reshape(
        x.shape[0], channels)
    offset = bias - jnp.repeat(mean, channels // groups, axis=1) * multiplier
    broadcast = lambda v: v.reshape(
        (x.shape[0],) + (1,) * (x.ndim - 2) + (channels,)).astype(self.dtype)
    return x.astype(self.dtype) * broadcast(multiplier) + broadcast(offset)


def _depthwise_taps(x, kernel, stride: int):
  """:func:`depthwise_conv` as one multiply-add per kernel tap."""
  size, multiplier = kernel.shape[0], kernel.shape[-1] // x.shape[-1]
  height, width = x.shape[1], x.shape[2]
  pad = size // 2
  x = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  if multiplier > 1:
    x = jnp.repeat(x, multiplier, axis=-1)
  total = None
  for row in range(size):
    for column in range(size):
      window = x[:, row:row + height:stride, column:column + width:stride]
      term = window * kernel[row, column, 0]
      total = term if total is None else total + term
  return total


def _depthwise_xla(x, kernel, stride: int):
  """:func:`depthwise_conv` as XLA's grouped convolution."""
  pad = kernel.shape[0] // 2
  return jax.lax.conv_general_dilated(
      x, kernel, (stride, stride), ((pad, pad), (pad, pad)),
      dimension_numbers=("NHWC", "HWIO", "NHWC"),
      feature_group_count=x.shape[-1])


def depthwise_conv(x, kernel, stride: int = 1):
  """Depthwise convolution, padded by ``k // 2`` on every side.

  ``y[b, i, j, c·m + r] = Σ_{u,v} x̃[b, s·i + u, s·j + v, c] ·
  kernel[u, v, 0, c·m + r]`` for ``x`` ``[B, H, W, C]``, ``kernel``
  ``[k, k, 1, C·m]`` (channel multiplier ``m``), stride ``s`` and ``x̃`` the
  zero-padded ``x``; ``y`` is ``[B, ⌈H/s⌉, ⌈W/s⌉, C·m]``.

  On CPUs it is computed as ``k²`` shifted multiply-adds, which XLA fuses
  into one loop: XLA's CPU backend runs grouped convolutions, and above all
  their gradients, far slower (a 52M training step of 32 at 16×16 is 4.9×
  faster this way; docs/design/mobile_former.md). Elsewhere it is XLA's
  grouped convolution, which GPU and TPU backends implement natively. The
  choice is made when the computation is lowered for its platform
  (``jax.lax.platform_dependent``).
  """
  return jax.lax.platform_dependent(
      x, kernel, cpu=functools.partial(_depthwise_taps, stride=stride),
      default=functools.partial(_depthwise_xla, stride=stride))


class DepthwiseConv(nn.Module):
  """:func:`depthwise_conv` with a ``kernel`` ``[k, k, 1, features]``.

  The parameter of ``nn.Conv(features, feature_group_count=C)`` (same name,
  shape and initializer), so checkpoints do not depend on which is used.
  """
  features: int
  kernel: int = 3
  stride: int = 1
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", _conv_init,
                        (self.kernel, self.kernel, 1, self.features))
    return depthwise_conv(x.astype(self.dtype), kernel.astype(self.dtype),
                          self.stride)


class ConvNorm(nn.Module):
  """Convolution without bias (``groups`` feature groups), then group norm."""
  features: int
  kernel: int = 1
  stride: int = 1
  groups: int = 1
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    if self.groups > 1 and self.groups == x.shape[-1]:
      x = DepthwiseConv(self.features, self.kernel, self.stride,
                        dtype=self.dtype, name="conv")(x)
    else:
      pad = self.kernel // 2  # Symmetric, as the authors' convolutions.
      x = nn.Conv(self.features, (self.kernel, self.kernel), self.stride,
                  padding=((pad, pad), (pad, pad)),
                  feature_group_count=self.groups, use_bias=False,
                  kernel_init=_conv_init, dtype=self.dtype, name="conv")(x)
    return GroupNorm(dtype=self.dtype, name="norm")(x)


class MobileFormerBlock(nn.Module):
  """One block (``spec.kind``, see the module docstring) at ``stride``.

  ``(feature_map [B, H, W, C_in], tokens [B, T, d])`` →
  ``([B, H / stride, W / stride, C_out], [B, T, d])``. With grouped
  pointwise convolutions (``groups > 1``, the 26M size) the channels are
  shuffled, as in the authors' code, after a depthwise convolution with a
  channel multiplier (by its input channels) and after a grouped
  convolution (by ``groups``), so that the next groups mix.
  """
  spec: Block
  stride: int
  groups: int = 1
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, tokens):
    spec, groups, dtype = self.spec, self.groups, self.dtype
    inputs, in_channels = x, x.shape[-1]

    def conv(features, kernel=1, stride=1, conv_groups=groups):
      return ConvNorm(features, kernel, stride, conv_groups, dtype=dtype)

    def shuffle(y, shuffle_groups):
      return channel_shuffle(y, shuffle_groups if groups > 1 else 1)

    def depthwise(y, multiplier, stride):
      channels = y.shape[-1]
      return shuffle(conv(channels * multiplier, 3, stride, channels)(y),
                     channels)

    if spec.kind == "lite":
      x = jax.nn.relu6(depthwise(x, spec.expansion, self.stride))
      x = conv(spec.channels)(x)
    else:
      tokens = Former(dtype=dtype)(MobileToFormer(dtype=dtype)(x, tokens))
      dynamic = lambda y: DynamicReLU(dtype=dtype)(y, tokens)
      if spec.kind == "inverted":
        hidden = in_channels * spec.expansion
        x = dynamic(shuffle(conv(hidden)(x), groups))
        x = dynamic(conv(hidden, 3, self.stride, hidden)(x))
        x = shuffle(conv(spec.channels)(x), groups)
      else:  # down
        x = conv(spec.channels)(dynamic(depthwise(x, spec.expansion,
                                                  self.stride)))
        x = x + conv(spec.channels)(dynamic(depthwise(x, spec.expansion2, 1)))
    if self.stride == 1 and in_channels == spec.channels:
      x = x + inputs
    if spec.kind != "lite":
      x = FormerToMobile(dtype=dtype)(x, tokens)
    return x, tokens


def classifier_features(feature_map, tokens):
  """The features the published classifier reads: ``[B, D + d]``.

  ``hard_swish(mean over positions of feature_map) ⊕ tokens[:, 0]``, from
  ``feature_map`` ``[B, h, w, D]`` and ``tokens`` ``[B, T, d]``.
  """
  pooled = hard_swish(jnp.mean(feature_map, axis=(1, 2)))
  return jnp.concatenate([pooled, tokens[:, 0].astype(pooled.dtype)], axis=-1)


class MobileFormer(nn.Module):
  """Mobile-Former: ``images [B, H, W, 3]`` → ``(feature_map, tokens)``.

  Attributes:
    size: a key of :data:`SIZES` (``"mobile_former_294m"``, ...).
    output_stride: feature stride, a power of two from 1 to the published
      32; smaller strides turn the first stride-2 layers (stem first) into
      stride-1 layers, for small images.
    num_classes: classes of :meth:`classify` (the published head).
    dtype: computation dtype; parameters are float32.

  ``__call__`` returns ``feature_map`` ``[B, H / s, W / s, D]`` (the last
  MobileNet map after the final 1×1 convolution, ``D = 6 C_last``, ReLU6,
  so non-negative) and ``tokens`` ``[B, T, d]``, in ``dtype``; ``s`` is
  ``output_stride`` and ``H``, ``W`` must be multiples of it. See
  :func:`feature_dims` for ``(D, d)``.
  """
  size: str = "mobile_former_294m"
  output_stride: int = 32
  num_classes: int = 1000
  dtype: Dtype = jnp.float32

  def setup(self):
    spec = check_size(self.size)
    native = native_stride(self.size)
    if (self.output_stride < 1 or self.output_stride & (self.output_stride - 1)
        or self.output_stride > native):
      raise ValueError(f"output_stride must be a power of two from 1 to "
                       f"{native}; got {self.output_stride}.")
    strides = [2] + [block.stride for block in spec.blocks]
    for _ in range(int(math.log2(native // self.output_stride))):
      strides[strides.index(2)] = 1
    self.stem = ConvNorm(spec.stem, 3, strides[0], dtype=self.dtype)
    self.blocks = [
        MobileFormerBlock(block, stride, spec.groups, dtype=self.dtype)
        for block, stride in zip(spec.blocks, strides[1:])]
    self.tokens = self.param("tokens", nn.initializers.normal(1.0),
                             (spec.num_tokens, spec.token_dim))
    self.last_bridge = MobileToFormer(dtype=self.dtype)
    self.expand = ConvNorm(HEAD_EXPANSION * spec.blocks[-1].channels,
                           groups=spec.groups, dtype=self.dtype)
    self.head_hidden = _dense(spec.head_features, self.dtype)
    self.head_norm = GroupNorm(dtype=self.dtype)
    self.head_logits = _dense(self.num_classes, self.dtype)

  def __call__(self, images):
    """``[B, H, W, 3]`` → ``([B, H/s, W/s, D], [B, T, d])``, in ``dtype``."""
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"images must be [B, H, W, 3]; got {images.shape}.")
    if any(side % self.output_stride for side in images.shape[1:3]):
      raise ValueError(f"image size {images.shape[1:3]} must be a multiple of "
                       f"output_stride={self.output_stride}.")
    x = jax.nn.relu6(self.stem(images.astype(self.dtype)))
    tokens = jnp.broadcast_to(self.tokens.astype(self.dtype),
                              (images.shape[0],) + self.tokens.shape)
    for block in self.blocks:
      x, tokens = block(x, tokens)
    tokens = self.last_bridge(x, tokens)
    groups = check_size(self.size).groups
    feature_map = jax.nn.relu6(self.expand(channel_shuffle(x, groups)))
    return feature_map, tokens

  def features(self, images):
    """:func:`classifier_features` of ``self(images)``: ``[B, D + d]``."""
    return classifier_features(*self(images))

  def classify(self, images):
    """The published classifier: ``[B, H, W, 3]`` → logits ``[B, classes]``
    (float32). Dropout is left out: it has no parameters."""
    hidden = hard_swish(self.head_norm(self.head_hidden(self.features(images))))
    return self.head_logits(hidden).astype(jnp.float32)
