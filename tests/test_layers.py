# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Tests for the upsampler's fused nearest ×2 upsampling and convolution.

The reference is what it replaces: ``jax.image.resize(..., "nearest")`` of
the map, then a SAME 3×3 convolution (``nn.Conv``).
"""

from absl.testing import absltest
from absl.testing import parameterized
import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.test_util import check_grads
import numpy as np

from finola_jax.models import layers
from tests import helpers


def _upsampled_then_convolved(x, kernel):
  batch, h, w, channels = x.shape
  upsampled = jax.image.resize(x, (batch, 2 * h, 2 * w, channels), "nearest")
  return jax.lax.conv_general_dilated(
      upsampled, kernel, (1, 1), "SAME",
      dimension_numbers=("NHWC", "HWIO", "NHWC"),
      precision=jax.lax.Precision.HIGHEST)


class _UpsamplerBefore(nn.Module):
  """layers.Upsampler as it was written before the fused convolution."""
  stride: int
  width: int
  norm: str

  @nn.compact
  def __call__(self, x):

    def hidden(x):
      x = nn.Conv(self.width, (3, 3))(x)
      if self.norm == "group":
        x = nn.GroupNorm(layers._groups(self.width))(x)
      return nn.swish(x)

    for _ in range(layers.log2(self.stride)):
      batch, h, w, c = x.shape
      x = hidden(jax.image.resize(x, (batch, 2 * h, 2 * w, c), "nearest"))
    x = hidden(hidden(x))
    return nn.Conv(3, (3, 3))(x) + 0.5


class NearestUpsampleConvTest(helpers.NoX64LeakTestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters((1, 1, 1, 1, 1), (2, 3, 5, 4, 3), (3, 8, 8, 6, 2))
  def test_equals_convolving_the_upsampled_map(self, batch, h, w, channels,
                                               features):
    rng = np.random.default_rng(h * w)
    x = jnp.asarray(rng.standard_normal((batch, h, w, channels)), jnp.float32)
    kernel = jnp.asarray(rng.standard_normal((3, 3, channels, features)),
                         jnp.float32)
    fused = self.variant(layers.nearest_upsample_conv)(x, kernel)
    chex.assert_shape(fused, (batch, 2 * h, 2 * w, features))
    np.testing.assert_allclose(fused, _upsampled_then_convolved(x, kernel),
                               rtol=1e-5, atol=1e-5)

  def test_gradients(self):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, 3, 4, 3)), jnp.float32)
    kernel = jnp.asarray(rng.standard_normal((3, 3, 3, 2)), jnp.float32)
    check_grads(layers.nearest_upsample_conv, (x, kernel), order=2,
                modes=["rev"], eps=1e-2, atol=2e-2, rtol=2e-2)
    cotangent = jnp.asarray(rng.standard_normal((2, 6, 8, 2)), jnp.float32)
    fused = jax.vjp(layers.nearest_upsample_conv, x, kernel)[1](cotangent)
    reference = jax.vjp(_upsampled_then_convolved, x, kernel)[1](cotangent)
    chex.assert_trees_all_close(fused, reference, rtol=1e-5, atol=1e-5)

  def test_bfloat16_input(self):
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((2, 4, 4, 8)), jnp.bfloat16)
    kernel = jnp.asarray(rng.standard_normal((3, 3, 8, 4)), jnp.float32)
    fused = layers.nearest_upsample_conv(x, kernel)
    self.assertEqual(fused.dtype, jnp.bfloat16)
    reference = _upsampled_then_convolved(x.astype(jnp.float32), kernel)
    np.testing.assert_allclose(fused.astype(jnp.float32), reference,
                               rtol=0.05, atol=0.1)

  @parameterized.parameters(("none", 4), ("group", 2))
  def test_upsampler_keeps_its_parameters_and_outputs(self, norm, stride):
    """Same parameter tree and initial values as before, so checkpoints load
    and runs start where they did; same outputs up to rounding."""
    feature_map = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 3, 16))
    new = layers.Upsampler(stride, width=8, norm=norm)
    before = _UpsamplerBefore(stride, width=8, norm=norm)
    key = jax.random.PRNGKey(1)
    params = new.init(key, feature_map)
    chex.assert_trees_all_equal(params, before.init(key, feature_map))
    np.testing.assert_allclose(new.apply(params, feature_map),
                               before.apply(params, feature_map),
                               rtol=1e-5, atol=1e-5)


if __name__ == "__main__":
  absltest.main()
