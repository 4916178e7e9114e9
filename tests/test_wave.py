# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Tests for finola_jax.wave: wave speeds, wave basis, PDE residuals."""

import functools

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np

import finola_jax as fj
from tests import helpers
from tests import reference


def _canonical_order(values):
  """Sorts complex values by (real part rounded, imaginary part)."""
  values = np.asarray(values)
  return values[np.lexsort((values.imag, np.round(values.real, 6)))]


def _matrices(seed, channels, scale=0.3):
  rng = np.random.default_rng(seed)
  A = scale * rng.normal(size=(channels, channels)) / np.sqrt(channels)
  B = scale * rng.normal(size=(channels, channels)) / np.sqrt(channels)
  return A, B


def ref_pde_residual(z, A, B, origin=None, step=1.0, eps=1e-6):
  """The docstring formula of pde_residual, one position at a time.

  Right of (below) the origin column (row): Δ = z(i) − z(i−1) against
  s·M ẑ(i−1); left of (above) it: Δ = z(i) − z(i+1) against −s·M ẑ(i+1).
  Frobenius norms over the whole map, one ratio per batch entry.
  """
  z = np.asarray(z, np.float64)
  A, B = np.asarray(A, np.float64), np.asarray(B, np.float64)
  H, W = z.shape[-3:-1]
  r0, c0 = (H // 2, W // 2) if origin is None else origin
  r_x = np.zeros(z.shape[:-3])
  r_y = np.zeros(z.shape[:-3])
  for idx in np.ndindex(*z.shape[:-3]):
    m = z[idx]
    err_x = norm_x = err_y = norm_y = 0.0
    for r in range(H):
      for c in range(W):
        if c != c0:
          src = c - 1 if c > c0 else c + 1
          sign = 1.0 if c > c0 else -1.0
          delta = m[r, c] - m[r, src]
          pred = sign * step * (A @ reference.normalize(m[r, src], eps))
          err_x += np.sum((delta - pred) ** 2)
          norm_x += np.sum(delta ** 2)
        if r != r0:
          src = r - 1 if r > r0 else r + 1
          sign = 1.0 if r > r0 else -1.0
          delta = m[r, c] - m[src, c]
          pred = sign * step * (B @ reference.normalize(m[src, c], eps))
          err_y += np.sum((delta - pred) ** 2)
          norm_y += np.sum(delta ** 2)
    r_x[idx] = np.sqrt(err_x) / np.sqrt(norm_x) if W > 1 else 0.0
    r_y[idx] = np.sqrt(err_y) / np.sqrt(norm_y) if H > 1 else 0.0
  return r_x, r_y


_Base = helpers.NoX64LeakTestCase


class WaveSpeedsTest(_Base):

  @chex.variants(with_jit=True, without_jit=True)
  def test_diagonal(self):
    a = np.array([1.0, -2.0, 0.5, 3.0])
    b = np.array([2.0, 4.0, -0.25, 1.0])
    with jax.enable_x64(True):
      speeds = self.variant(fj.wave_speeds)(np.diag(a), np.diag(b))
    self.assertEqual(speeds.shape, (4,))
    self.assertTrue(jnp.iscomplexobj(speeds))
    np.testing.assert_allclose(_canonical_order(speeds),
                               _canonical_order(a / b + 0j), atol=1e-12)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(("b_identity", 1.0), ("b_scaled", 2.0))
  def test_rotation(self, b_scale):
    theta = 0.7
    A = np.array([[np.cos(theta), -np.sin(theta)],
                  [np.sin(theta), np.cos(theta)]])
    with jax.enable_x64(True):
      speeds = self.variant(fj.wave_speeds)(A, b_scale * np.eye(2))
    want = np.exp(np.array([-1j, 1j]) * theta) / b_scale
    np.testing.assert_allclose(_canonical_order(speeds), _canonical_order(want),
                               atol=1e-12)

  @chex.variants(with_jit=True, without_jit=True)
  def test_random_matches_numpy(self):
    rng = np.random.default_rng(0)
    A = rng.normal(size=(6, 6))
    B = np.eye(6) + 0.2 * rng.normal(size=(6, 6))  # well conditioned
    self.assertLess(np.linalg.cond(B), 10.0)
    want = np.linalg.eigvals(A @ np.linalg.inv(B))
    self.assertGreater(np.abs(want.imag).max(), 1e-3)  # has complex pairs
    with jax.enable_x64(True):
      speeds = self.variant(fj.wave_speeds)(A, B)
    np.testing.assert_allclose(_canonical_order(speeds), _canonical_order(want),
                               atol=1e-10)
    # float32 in: close to the float64 answer.
    speeds32 = self.variant(fj.wave_speeds)(A.astype(np.float32),
                                            B.astype(np.float32))
    np.testing.assert_allclose(_canonical_order(speeds32),
                               _canonical_order(want), atol=1e-4)

  def test_order_of_product_matters(self):
    # A B⁻¹, not B⁻¹ A's transpose or A⁻¹ B: the speeds of diag matrices are
    # a/b, and for a non-commuting pair A B⁻¹ and B⁻¹ A share eigenvalues but
    # A⁻¹ B (the inverse speeds) does not.
    A, B = _matrices(1, 4, scale=1.0)
    B = B + 2.0 * np.eye(4)
    with jax.enable_x64(True):
      speeds = fj.wave_speeds(A, B)
    inverse = np.linalg.eigvals(np.linalg.inv(A) @ B)
    self.assertGreater(
        np.abs(_canonical_order(speeds) - _canonical_order(inverse)).max(),
        1e-2)

  @chex.variants(with_jit=True, without_jit=True)
  def test_basis_reconstructs(self):
    rng = np.random.default_rng(2)
    A = rng.normal(size=(5, 5))
    B = np.eye(5) + 0.2 * rng.normal(size=(5, 5))
    with jax.enable_x64(True):
      speeds, V = self.variant(fj.wave_basis)(A, B)
      speeds_only = fj.wave_speeds(A, B)
    chex.assert_shape((speeds, V), ((5,), (5, 5)))
    V = np.asarray(V)
    recon = V @ np.diag(speeds) @ np.linalg.inv(V)
    np.testing.assert_allclose(recon, A @ np.linalg.inv(B), atol=1e-10)
    np.testing.assert_allclose(np.linalg.norm(V, axis=0), np.ones(5),
                               atol=1e-12)
    np.testing.assert_allclose(_canonical_order(speeds),
                               _canonical_order(speeds_only), atol=1e-10)
    # ζ = V⁻¹ z diagonalizes: V⁻¹ (A B⁻¹) V = diag(speeds).
    np.testing.assert_allclose(np.linalg.inv(V) @ A @ np.linalg.inv(B) @ V,
                               np.diag(speeds), atol=1e-10)

  @parameterized.named_parameters(
      ("A_not_square", np.ones((3, 4)), np.eye(3), ValueError,
       r"A must be a square"),
      ("A_rank1", np.ones((3,)), np.eye(3), ValueError, r"A must be a square"),
      ("B_not_square", np.eye(3), np.ones((3, 2)), ValueError,
       r"B must be a square"),
      ("B_mismatch", np.eye(3), np.eye(4), ValueError,
       r"B is 4×4 but A has C=3"),
      ("A_int", np.eye(3, dtype=np.int32), np.eye(3), TypeError,
       r"A must have a floating dtype"),
      ("B_int", np.eye(3), np.eye(3, dtype=np.int32), TypeError,
       r"B must have a floating dtype"),
  )
  def test_bad_inputs(self, A, B, exception, regex):
    A, B = np.asarray(A), np.asarray(B)
    A = A.astype(np.float32) if A.dtype == np.float64 else A
    B = B.astype(np.float32) if B.dtype == np.float64 else B
    for fn in (fj.wave_speeds, fj.wave_basis):
      with self.assertRaisesRegex(exception, regex):
        fn(A, B)
      with self.assertRaisesRegex(exception, regex):
        jax.eval_shape(fn, A, B)


class PdeResidualTest(_Base):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    A, B = _matrices(3, 6)
    rng = np.random.default_rng(4)
    cls.A, cls.B = A, B
    cls.q = rng.normal(size=(2, 6)) + rng.normal(size=(6,))
    cls.origin, cls.step = (2, 4), 0.7
    with jax.enable_x64(True):
      fn = jax.jit(lambda q, A, B: tuple(
          fj.unroll(q, A, B, 5, 7, origin=cls.origin, path=p, step=cls.step)
          for p in ("vertical_first", "horizontal_first")))
      cls.vf, cls.hf = jax.device_get(fn(cls.q, A, B))

  def _residual(self, variant, z, **kw):
    with jax.enable_x64(True):
      out = variant(functools.partial(fj.pde_residual, **kw))(z, self.A, self.B)
      return jax.device_get(out)

  @chex.variants(with_jit=True, without_jit=True)
  def test_vertical_first_map(self):
    r_x, r_y = self._residual(self.variant, self.vf, origin=self.origin,
                              step=self.step)
    chex.assert_shape((r_x, r_y), ((2,), (2,)))
    np.testing.assert_array_less(r_x, 1e-10)  # every row made by A steps
    np.testing.assert_array_less(0.05, r_y)  # columns are not B steps

  @chex.variants(with_jit=True)
  def test_horizontal_first_map(self):
    r_x, r_y = self._residual(self.variant, self.hf, origin=self.origin,
                              step=self.step)
    np.testing.assert_array_less(r_y, 1e-10)
    np.testing.assert_array_less(0.05, r_x)

  def test_wrong_origin_or_step_is_detected(self):
    r_x, _ = self._residual(jax.jit, self.vf, origin=(2, 2), step=self.step)
    np.testing.assert_array_less(0.05, r_x)
    r_x, _ = self._residual(jax.jit, self.vf, origin=self.origin,
                            step=-self.step)
    np.testing.assert_array_less(0.05, r_x)

  @chex.variants(with_jit=True)
  def test_random_map_is_order_one(self):
    rng = np.random.default_rng(5)
    z = rng.normal(size=(2, 5, 7, 6))
    r_x, r_y = self._residual(self.variant, z)
    for r in (r_x, r_y):
      np.testing.assert_array_less(0.5, r)
      np.testing.assert_array_less(r, 2.0)

  # Un-jitted pde_residual compiles every small op for each new shape (slow
  # on 2 cores): eager runs only in test_vertical_first_map.
  @chex.variants(with_jit=True)
  @parameterized.named_parameters(
      ("unroll_vf", "vf", None, 1.0),
      ("unroll_hf_origin_step", "hf", (2, 4), 0.7),
      ("random_origin_corner", "random", (0, 6), -0.5),
      ("random_batch2_origin", "random_b2", (4, 0), 1.3),
  )
  def test_matches_naive_reference(self, which, origin, step):
    rng = np.random.default_rng(6)
    z = {"vf": self.vf, "hf": self.hf,
         "random": rng.normal(size=(5, 7, 6)),
         "random_b2": rng.normal(size=(2, 3, 5, 7, 6))}[which]
    got = self._residual(self.variant, z, origin=origin, step=step, eps=1e-3)
    want = ref_pde_residual(z, self.A, self.B, origin, step, eps=1e-3)
    chex.assert_shape(got, (z.shape[:-3], z.shape[:-3]))
    np.testing.assert_allclose(got[0], want[0], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-10, atol=1e-12)

  def test_float32_and_degenerate_maps(self):
    A, B = self.A.astype(np.float32), self.B.astype(np.float32)
    z = np.random.default_rng(7).normal(size=(4, 1, 5, 6)).astype(np.float32)
    residual = jax.jit(fj.pde_residual, static_argnames="origin")
    r_x, r_y = residual(z, A, B)
    self.assertEqual(r_x.dtype, jnp.float32)
    chex.assert_shape((r_x, r_y), ((4,), (4,)))
    np.testing.assert_array_equal(r_y, np.zeros(4))  # H == 1
    self.assertTrue(np.all(np.asarray(r_x) > 0.1))
    r_x, r_y = residual(np.swapaxes(z, -2, -3), A, B)  # W == 1
    np.testing.assert_array_equal(r_x, np.zeros(4))
    # A constant map (an unroll with step 0): 0/tiny, finite, zero.
    const = np.broadcast_to(self.q[0].astype(np.float32), (3, 4, 6))
    r_x, r_y = residual(const, A, B, step=0.0)
    chex.assert_tree_all_finite((r_x, r_y))
    np.testing.assert_array_equal((r_x, r_y), (0.0, 0.0))

  @parameterized.named_parameters(
      ("z_rank2", np.ones((4, 6), np.float32), {}, ValueError,
       r"z must have shape \[\.\.\., H, W, C\]"),
      ("z_int", np.ones((2, 2, 6), np.int32), {}, TypeError,
       r"z must have a floating dtype"),
      ("A_wrong_C", np.ones((2, 2, 5), np.float32), {}, ValueError,
       r"A is 6×6 but z has C=5"),
      ("origin_outside", np.ones((2, 3, 6), np.float32), {"origin": (2, 0)},
       ValueError, r"origin \(2, 0\) is outside the 2×3 map"),
  )
  def test_bad_inputs(self, z, kwargs, exception, regex):
    A, B = self.A.astype(np.float32), self.B.astype(np.float32)
    with self.assertRaisesRegex(exception, regex):
      fj.pde_residual(z, A, B, **kwargs)
    with self.assertRaisesRegex(exception, regex):
      jax.eval_shape(functools.partial(fj.pde_residual, **kwargs), z, A, B)

  def test_bad_matrices(self):
    z = np.ones((2, 2, 3), np.float32)
    with self.assertRaisesRegex(ValueError, r"A must be a square"):
      fj.pde_residual(z, np.ones((3, 2), np.float32), np.eye(3, dtype=np.float32))
    with self.assertRaisesRegex(TypeError, r"B must have a floating dtype"):
      fj.pde_residual(z, np.eye(3, dtype=np.float32), np.eye(3, dtype=np.int32))


if __name__ == "__main__":
  absltest.main()
