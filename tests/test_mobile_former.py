# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Tests for finola_jax.models.mobile_former.

The references are float64 NumPy transcriptions of the paper's equations,
one head and one position at a time, sharing no code with the module. The
published sizes are checked compile-only (``jax.eval_shape`` for shapes and
parameters, ``lower(...).cost_analysis()`` for multiply-adds); only the tiny
size runs.
"""

import math

from absl.testing import absltest
from absl.testing import parameterized
import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import test_util as jtu
import numpy as np

from finola_jax.models import mobile_former as mf
from tests import helpers

TINY = "mobile_former_tiny"
PUBLISHED = tuple(mf.PUBLISHED_PARAMS)
PARAMS_TOLERANCE = 0.03
MADDS_TOLERANCE = 0.10

# -------------------------------------------------------------- references ---


def ref_hard_sigmoid(x):
  return np.clip(x + 3.0, 0.0, 6.0) / 6.0


def ref_dynamic_relu(x, coefficients):
  """x [B, H, W, C], coefficients [B, 2C]: the larger of two lines."""
  out = np.empty_like(x)
  channels = x.shape[-1]
  for b in range(x.shape[0]):
    for c in range(channels):
      a1 = 2.0 * (coefficients[b, c] - 0.5) + 1.0
      a2 = 2.0 * (coefficients[b, channels + c] - 0.5)
      out[b, ..., c] = np.maximum(a1 * x[b, ..., c], a2 * x[b, ..., c])
  return out


def ref_dense(params, x):
  return x @ np.asarray(params["kernel"], np.float64) + np.asarray(
      params["bias"], np.float64)


def ref_layer_norm(params, x, eps=1e-6):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return ((x - mean) / np.sqrt(var + eps) * np.asarray(params["scale"])
          + np.asarray(params["bias"]))


def ref_attention(queries, keys, values, heads):
  """[Lq, C], [Lk, C], [Lk, Cv] of one example, one head and query at a
  time."""
  dq, dv = queries.shape[-1] // heads, values.shape[-1] // heads
  out = np.zeros((queries.shape[0], values.shape[-1]))
  for h in range(heads):
    q = queries[:, h * dq:(h + 1) * dq]
    k = keys[:, h * dq:(h + 1) * dq]
    v = values[:, h * dv:(h + 1) * dv]
    for i in range(q.shape[0]):
      logits = np.array([q[i] @ k[j] for j in range(len(k))]) / math.sqrt(dq)
      weights = np.exp(logits - logits.max())
      weights /= weights.sum()
      out[i, h * dv:(h + 1) * dv] = weights @ v
  return out


def ref_mobile_to_former(params, feature_map, tokens):
  out = []
  for x, t in zip(feature_map, tokens):
    pixels = x.reshape(-1, x.shape[-1])
    attended = ref_attention(ref_dense(params["query"], t), pixels, pixels, 2)
    gate = 2.0 * ref_hard_sigmoid(ref_dense(params["gate"], t))
    update = ref_dense(params["project"], gate * attended)
    out.append(ref_layer_norm(params["norm"], t + update))
  return np.stack(out)


def ref_former_to_mobile(params, feature_map, tokens):
  out = []
  for x, t in zip(feature_map, tokens):
    pixels = x.reshape(-1, x.shape[-1])
    update = ref_attention(pixels, ref_dense(params["key"], t),
                           ref_dense(params["value"], t), 2)
    out.append(x + update.reshape(x.shape))
  return np.stack(out)


def ref_former(params, tokens):
  out = []
  for t in tokens:
    attended = ref_attention(ref_dense(params["query"], t), t, t, 4)
    t = ref_layer_norm(params["attention_norm"],
                       t + ref_dense(params["mix"], attended))
    hidden = ref_dense(params["ffn_in"], t)
    hidden = 0.5 * hidden * (1.0 + np.vectorize(math.erf)(hidden / math.sqrt(2)))
    out.append(ref_layer_norm(params["ffn_norm"],
                              t + ref_dense(params["ffn_out"], hidden)))
  return np.stack(out)


def _random_like(tree, seed, scale=0.5):
  """Every leaf replaced by N(0, scale²) noise (parameters away from init;
  no compiled initializer: the init of the whole network compiles slowly)."""
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map(
      lambda leaf: rng.normal(0.0, scale, leaf.shape).astype(leaf.dtype), tree)


def _as_numpy(tree):
  return jax.tree_util.tree_map(lambda x: np.asarray(x, np.float64), tree)


def _count(tree) -> int:
  return sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(tree))


# ------------------------------------------------------------------- tests ---


class FunctionsTest(helpers.NoX64LeakTestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_dynamic_relu_matches_reference(self):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
    coefficients = rng.uniform(size=(2, 10)).astype(np.float32)
    actual = self.variant(mf.dynamic_relu)(x, coefficients)
    np.testing.assert_allclose(actual, ref_dynamic_relu(x, coefficients),
                               rtol=1e-6, atol=1e-6)

  def test_dynamic_relu_at_one_half_is_relu(self):
    x = np.linspace(-2, 2, 12, dtype=np.float32).reshape(1, 2, 2, 3)
    np.testing.assert_allclose(
        mf.dynamic_relu(x, np.full((1, 6), 0.5, np.float32)), np.maximum(x, 0))

  def test_dynamic_relu_rejects_wrong_coefficients(self):
    with self.assertRaisesRegex(ValueError, r"must be \[B, 2C\]"):
      mf.dynamic_relu(jnp.zeros((2, 3, 3, 4)), jnp.zeros((2, 4)))

  def test_dynamic_relu_module_matches_reference(self):
    x = np.random.default_rng(1).normal(size=(2, 3, 3, 6)).astype(np.float32)
    tokens = np.random.default_rng(2).normal(size=(2, 3, 8)).astype(np.float32)
    module = mf.DynamicReLU()
    params = _random_like(
        jax.eval_shape(module.init, jax.random.PRNGKey(0), x, tokens), 3)
    p = _as_numpy(params)["params"]
    hidden = np.maximum(ref_dense(p["squeeze"], tokens[:, 0]), 0)
    coefficients = ref_hard_sigmoid(ref_dense(p["expand"], hidden))
    self.assertEqual(p["squeeze"]["kernel"].shape, (8, 2))  # d / 4
    np.testing.assert_allclose(module.apply(params, x, tokens),
                               ref_dynamic_relu(x, coefficients),
                               rtol=1e-5, atol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  def test_channel_shuffle(self):
    x = np.arange(12, dtype=np.float32).reshape(1, 1, 12)
    # 3 groups of 4: channel g·4 + i goes to i·3 + g.
    expected = [0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11]
    shuffle = self.variant(mf.channel_shuffle, static_argnums=1)
    np.testing.assert_array_equal(shuffle(x, 3)[0, 0], expected)

  def test_group_norm_matches_flax(self):
    x = 3.0 * jax.random.normal(jax.random.PRNGKey(0), (2, 5, 4, 24)) + 1.0
    variables = _random_like(
        jax.eval_shape(mf.GroupNorm().init, jax.random.PRNGKey(1), x), 2)
    chex.assert_trees_all_close(mf.GroupNorm().apply(variables, x),
                                nn.GroupNorm(8).apply(variables, x),
                                rtol=1e-5, atol=1e-5)

  @parameterized.parameters((1, 1, 3, 7), (2, 1, 3, 8), (2, 2, 3, 7),
                            (1, 3, 5, 6))
  def test_depthwise_taps_match_xla_convolution(self, stride, multiplier,
                                                size, side):
    """The CPU form of depthwise_conv (shifted multiply-adds) against XLA's
    grouped convolution: values and both gradients."""
    x = jax.random.normal(jax.random.PRNGKey(0), (2, side, side, 4))
    kernel = jax.random.normal(jax.random.PRNGKey(1),
                               (size, size, 1, 4 * multiplier))
    cotangent = jax.random.normal(
        jax.random.PRNGKey(2),
        (2, -(-side // stride), -(-side // stride), 4 * multiplier))
    for candidate in (mf._depthwise_taps, mf.depthwise_conv):
      outputs = []
      for function in (candidate, mf._depthwise_xla):
        y, vjp = jax.vjp(lambda a, b, f=function: f(a, b, stride), x, kernel)
        outputs.append((y, vjp(cotangent)))
      chex.assert_trees_all_close(*outputs, rtol=1e-5, atol=1e-5)

  def test_cost_analysis_counts_a_multiply_add_as_two_flops(self):
    # The multiply-add test below halves XLA's "flops": check that premise.
    dense = jax.jit(jnp.matmul).lower(jnp.ones((3, 5)), jnp.ones((5, 7)))
    self.assertEqual(dense.cost_analysis()["flops"], 2 * 3 * 5 * 7)
    conv = jax.jit(lambda x, w: jax.lax.conv_general_dilated(
        x, w, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=4)).lower(jnp.ones((1, 6, 6, 16)),
                                      jnp.ones((3, 3, 4, 8)))
    self.assertEqual(conv.cost_analysis()["flops"],
                     2 * (4 * 4 * 8) * (3 * 3 * 4))


class BridgesTest(helpers.NoX64LeakTestCase):
  """The two bridges and the Former layer against the reference, on tiny
  shapes."""

  def setUp(self):
    super().setUp()
    rng = np.random.default_rng(0)
    self.feature_map = rng.normal(size=(2, 3, 2, 4)).astype(np.float32)
    self.tokens = rng.normal(size=(2, 3, 6)).astype(np.float32)

  def _check(self, module, reference):
    params = _random_like(jax.eval_shape(
        module.init, jax.random.PRNGKey(0), self.feature_map, self.tokens), 1)
    expected = reference(_as_numpy(params)["params"],
                         self.feature_map.astype(np.float64),
                         self.tokens.astype(np.float64))
    actual = jax.jit(module.apply)(params, self.feature_map, self.tokens)
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4)

  def test_mobile_to_former_matches_reference(self):
    self._check(mf.MobileToFormer(), ref_mobile_to_former)

  def test_former_to_mobile_matches_reference(self):
    self._check(mf.FormerToMobile(), ref_former_to_mobile)

  def test_former_matches_reference(self):
    module = mf.Former()
    tokens = np.random.default_rng(1).normal(size=(2, 3, 8)).astype(np.float32)
    params = _random_like(
        jax.eval_shape(module.init, jax.random.PRNGKey(0), tokens), 2)
    expected = ref_former(_as_numpy(params)["params"],
                          tokens.astype(np.float64))
    np.testing.assert_allclose(jax.jit(module.apply)(params, tokens),
                               expected, rtol=1e-4, atol=1e-4)
    with self.assertRaisesRegex(ValueError, "4 heads must divide"):
      module.init(jax.random.PRNGKey(0), self.tokens)  # d = 6.


class MobileFormerTest(helpers.NoX64LeakTestCase):

  def test_published_sizes(self):
    """Shapes at 224×224; parameters within ±3 % and multiply-adds within
    ±10 % of the paper (1000-class head included).

    One trace per size for shapes and parameters (``eval_shape`` of
    ``classify``'s init, capturing ``__call__``'s outputs), one for the
    cost analysis (``lower``): nothing is compiled.
    """
    images = jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.float32)
    report, failures = [], []
    for size in PUBLISHED:
      model = mf.MobileFormer(size)
      logits, variables = jax.eval_shape(
          lambda x, model=model: model.init_with_output(
              jax.random.PRNGKey(0), x, method="classify",
              capture_intermediates=lambda module, method: isinstance(
                  module, mf.MobileFormer) and method == "__call__"), images)
      (feature_map, tokens), = variables.pop("intermediates")["__call__"]
      spec = mf.SIZES[size]
      channels, token_dim = mf.feature_dims(size)
      self.assertEqual(mf.native_stride(size), 32)
      self.assertEqual(feature_map.shape, (2, 7, 7, channels))
      self.assertEqual(tokens.shape, (2, spec.num_tokens, token_dim))
      self.assertEqual(logits.shape, (2, 1000))
      params = _count(variables) / 1e6
      classify = lambda v, x, model=model: model.apply(v, x, method="classify")
      madds = jax.jit(classify).lower(variables, images).cost_analysis()[
          "flops"] / 2e6 / images.shape[0]
      params_error = params / mf.PUBLISHED_PARAMS[size] - 1
      madds_error = madds / mf.PUBLISHED_MADDS[size] - 1
      line = (f"{size}: {params:.2f}M params ({params_error:+.1%}), "
              f"{madds:.1f}M MAdds ({madds_error:+.1%})")
      report.append(line)
      if (abs(params_error) > PARAMS_TOLERANCE
          or abs(madds_error) > MADDS_TOLERANCE):
        failures.append(line)
    self.assertEmpty(failures, "\n".join(report))

  @parameterized.parameters((TINY, 8, 4), (TINY, 4, 8),
                            ("mobile_former_294m", 4, 8))
  def test_small_image_stem(self, size, output_stride, map_size):
    images = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
    shapes = lambda model: jax.eval_shape(
        lambda x: model.init_with_output(jax.random.PRNGKey(0), x), images)
    (feature_map, tokens), variables = shapes(
        mf.MobileFormer(size, output_stride=output_stride))
    spec = mf.SIZES[size]
    channels, _ = mf.feature_dims(size)
    self.assertEqual(feature_map.shape, (2, map_size, map_size, channels))
    self.assertEqual(tokens.shape, (2, spec.num_tokens, spec.token_dim))
    if size == TINY:  # Only strides change: the parameters are the same.
      _, published = shapes(mf.MobileFormer(size))
      chex.assert_trees_all_equal_shapes(variables, published)

  def test_bad_arguments(self):
    images = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    init = lambda model, x=images: jax.eval_shape(
        lambda x: model.init(jax.random.PRNGKey(0), x), x)
    with self.assertRaisesRegex(ValueError, "Unknown block kind 'fused'"):
      mf.Block("fused", 4, 16, 1)
    with self.assertRaisesRegex(ValueError, "Unknown Mobile-Former size"):
      init(mf.MobileFormer("mobile_former_1g"))
    with self.assertRaisesRegex(ValueError, "power of two from 1 to 32"):
      init(mf.MobileFormer(TINY, output_stride=6))
    with self.assertRaisesRegex(ValueError, "power of two from 1 to 32"):
      init(mf.MobileFormer(TINY, output_stride=64))
    with self.assertRaisesRegex(ValueError, "multiple of output_stride=32"):
      init(mf.MobileFormer(TINY), jax.ShapeDtypeStruct((1, 48, 40, 3),
                                                       jnp.float32))
    with self.assertRaisesRegex(ValueError, r"must be \[B, H, W, 3\]"):
      init(mf.MobileFormer(TINY), jax.ShapeDtypeStruct((1, 32, 32),
                                                       jnp.float32))

  def test_tiny_forward_float32_and_bfloat16(self):
    images = jax.random.uniform(jax.random.PRNGKey(1), (2, 16, 16, 3))
    full = mf.MobileFormer(TINY, output_stride=4)
    half = mf.MobileFormer(TINY, output_stride=4, dtype=jnp.bfloat16)
    shapes = jax.eval_shape(full.init, jax.random.PRNGKey(0), images)
    chex.assert_trees_all_equal_shapes_and_dtypes(
        shapes, jax.eval_shape(half.init, jax.random.PRNGKey(0), images))
    for leaf in jax.tree_util.tree_leaves(shapes):
      self.assertEqual(leaf.dtype, jnp.float32)
    variables = _random_like(shapes, 4, scale=0.2)

    feature_map, tokens = jax.jit(full.apply)(variables, images)
    self.assertEqual(feature_map.shape, (2, 4, 4, 144))
    self.assertEqual(tokens.shape, (2, 2, 16))
    chex.assert_tree_all_finite((feature_map, tokens))
    # Different images give different tokens: the bridges carry the image.
    self.assertGreater(float(jnp.abs(tokens[0] - tokens[1]).max()), 1e-4)
    features = jax.eval_shape(
        lambda v, x: full.apply(v, x, method="features"), variables, images)
    self.assertEqual(features.shape, (2, 144 + 16))
    expected = np.concatenate([
        np.asarray(mf.hard_swish(feature_map.mean(axis=(1, 2)))),
        np.asarray(tokens[:, 0])], axis=-1)
    np.testing.assert_allclose(mf.classifier_features(feature_map, tokens),
                               expected, rtol=1e-6, atol=1e-6)

    for actual, reference in zip(jax.jit(half.apply)(variables, images),
                                 (feature_map, tokens)):
      self.assertEqual(actual.dtype, jnp.bfloat16)
      chex.assert_tree_all_finite(actual)
      error = jnp.abs(actual.astype(jnp.float32) - reference).max()
      self.assertLess(float(error), 0.1 * float(jnp.abs(reference).max()))

  def test_block_gradients_x64(self):
    """check_grads (reverse mode, float64) of one ``down`` block at stride 1:
    both bridges, the Former layer, dynamic ReLUs, depthwise and pointwise
    convolutions, group norms and both residuals."""
    with jax.enable_x64(True):
      block = mf.MobileFormerBlock(mf.Block("down", 2, 8, 1, 2), 1,
                                   dtype=jnp.float64)
      feature_map = jax.random.normal(jax.random.PRNGKey(1), (2, 4, 4, 8),
                                      jnp.float64)
      tokens = jax.random.normal(jax.random.PRNGKey(2), (2, 2, 8), jnp.float64)
      params = jax.tree_util.tree_map(
          lambda x: jnp.asarray(x, jnp.float64), _random_like(jax.eval_shape(
              block.init, jax.random.PRNGKey(0), feature_map, tokens)[
                  "params"], 3))

      def loss(params, feature_map, tokens):
        out_map, out_tokens = block.apply({"params": params}, feature_map,
                                          tokens)
        return jnp.sum(jnp.sin(out_map)) + jnp.sum(jnp.sin(out_tokens))

      jtu.check_grads(jax.jit(loss), (params, feature_map, tokens), order=1,
                      modes=("rev",), eps=1e-5)


if __name__ == "__main__":
  absltest.main()
