# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Tests for finola_jax.numerics: the storage view's one rule.

The view (16-bit floats crossing loops as uint16 when lowered for CPU) has
two users, the walks (``walk_xla``, tested in test_core.py) and the models'
``decode_in_chunks`` (here).
"""

import functools

from absl.testing import absltest
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from finola_jax import numerics
from finola_jax.models import layers
from tests import helpers


def _looped_copy(x, *, view):
  """Copies ``x`` line by line through a loop, in the storage view."""
  stored = numerics.to_storage(x, view)

  def body(out, i):
    line = jax.lax.dynamic_index_in_dim(stored, i, keepdims=False)
    return jax.lax.dynamic_update_index_in_dim(out, line, i, 0), None

  out, _ = jax.lax.scan(body, jnp.zeros_like(stored), jnp.arange(len(x)))
  return jnp.sin(numerics.from_storage(out, x.dtype).astype(jnp.float32))


class _Decoder(nn.Module):
  chunk: int

  @nn.compact
  def __call__(self, feature_map):
    return layers.decode_in_chunks(
        layers.Upsampler(stride=1, width=8, name="upsampler"), feature_map,
        self.chunk)


class StorageViewTest(helpers.NoX64LeakTestCase):

  def test_view_follows_the_lowering_platform(self):
    x = jnp.zeros((3, 4), jnp.bfloat16)
    copy = jax.jit(functools.partial(numerics.with_storage_view, _looped_copy,
                                     x.dtype)).trace(x)
    self.assertIn("ui16", copy.lower(lowering_platforms=("cpu",)).as_text())
    self.assertNotIn("ui16",
                     copy.lower(lowering_platforms=("cuda",)).as_text())
    # float32 is never viewed.
    x32 = x.astype(jnp.float32)
    text = jax.jit(functools.partial(numerics.with_storage_view, _looped_copy,
                                     x32.dtype)).lower(x32).as_text()
    self.assertNotIn("ui16", text)

  def test_derivatives_of_any_order_ignore_the_view(self):
    x = jnp.asarray(np.linspace(-1.0, 1.0, 12).reshape(3, 4), jnp.bfloat16)

    def loss(function, x):
      return jnp.sum(function(x) ** 3)

    viewed = functools.partial(numerics.with_storage_view, _looped_copy,
                               x.dtype)
    plain = functools.partial(_looped_copy, view=False)
    for order in (1, 2):
      got, want = (functools.partial(loss, f) for f in (viewed, plain))
      for _ in range(order):
        got, want = (jax.grad(lambda x, f=f: jnp.sum(
            f(x).astype(jnp.float32))) for f in (got, want))
      np.testing.assert_array_equal(
          np.asarray(jax.jit(got)(x), np.float32),
          np.asarray(jax.jit(want)(x), np.float32))
      self.assertGreater(float(jnp.abs(jax.jit(want)(x)).max()), 0.1)

  def test_decode_in_chunks_second_order_on_16_bit_maps(self):
    # d/dmap of <v, d/dmap loss>: through the chunks' loops it must equal
    # the plain decoder's (an integer view would silently make it zero).
    feature_map = jnp.asarray(
        np.random.default_rng(0).normal(size=(2, 4, 4, 8)), jnp.bfloat16)
    params = _Decoder(chunk=0).init(jax.random.PRNGKey(0), feature_map)
    direction = jnp.asarray(
        np.random.default_rng(1).normal(size=feature_map.shape),
        jnp.bfloat16)

    def hessian_vector(chunk):
      def loss(feature_map):
        pixels = _Decoder(chunk=chunk).apply(params, feature_map)
        return jnp.sum(jnp.sin(3.0 * pixels))

      def directional(feature_map):
        grad = jax.grad(loss)(feature_map)
        return jnp.sum((grad * direction).astype(jnp.float32))

      return jax.jit(jax.grad(directional))(feature_map)

    plain, chunked = hessian_vector(0), hessian_vector(1)
    scale = float(jnp.abs(plain.astype(jnp.float32)).max())
    self.assertGreater(scale, 1e-3)
    np.testing.assert_allclose(np.asarray(chunked, np.float32),
                               np.asarray(plain, np.float32),
                               atol=0.02 * scale, rtol=0)


if __name__ == "__main__":
  absltest.main()
