# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Tests for finola_jax.core: normalize, unroll, extrapolate.

The reference is ``tests/reference.py``: plain loops in float64 numpy, or
in JAX (``xp=jnp``) where its gradients are the reference of the walks'
custom backward.

Cost note (2 CPU cores): every distinct shape/path compiles one or more
``lax.scan`` programs (~0.3-0.5 s each), and an un-jitted call re-traces and
re-compiles its scans on every call. The large reference grids therefore run
under ``with_jit`` only; ``without_jit`` (and ``with_pmap`` where a leading
device axis makes sense) run on a representative subset.
"""

import functools
import importlib
import subprocess
import sys
import unittest
from unittest import mock  # pylint: disable=unused-import

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import jax.extend
import jax.numpy as jnp
from jax import test_util as jtu
import numpy as np

import finola_jax as fj
from tests import helpers
from tests import reference

PATHS = ("vertical_first", "horizontal_first", "average")
CORNERS = ("top_left", "top_right", "bottom_left", "bottom_right")


def _power(matrix, k, step):
  """(I + s M)^k for k >= 0, (I - s M)^|k| for k < 0."""
  eye = np.eye(matrix.shape[0])
  base = eye + step * matrix if k >= 0 else eye - step * matrix
  return np.linalg.matrix_power(base, abs(k))


def ref_linear_unroll(q, A, B, height, width, origin, path, step):
  """Closed form of the un-normalized (QB-Heat) unroll: products of powers."""
  q = np.asarray(q, np.float64)
  A, B = np.asarray(A, np.float64), np.asarray(B, np.float64)
  r0, c0 = origin
  out = np.zeros(q.shape[:-1] + (height, width, q.shape[-1]))
  for r in range(height):
    for c in range(width):
      pa, pb = _power(A, c - c0, step), _power(B, r - r0, step)
      m = pa @ pb if path == "vertical_first" else pb @ pa
      out[..., r, c, :] = q @ m.T
  return out


def _problem(seed, batch, channels, scale=0.3, block_hw=None):
  """(x, A, B) float64 numpy; x is q [*batch, C] or a block [*batch, h, w, C]."""
  rng = np.random.default_rng(seed)
  shape = tuple(batch) + (tuple(block_hw) if block_hw else ()) + (channels,)
  x = rng.normal(size=shape) + rng.normal(size=(channels,))
  A = scale * rng.normal(size=(channels, channels)) / np.sqrt(channels)
  B = scale * rng.normal(size=(channels, channels)) / np.sqrt(channels)
  return x, A, B


def _all_paths_unroll(height, width, origin, **kw):
  def fn(q, A, B, step):
    return tuple(fj.unroll(q, A, B, height, width, origin=origin, path=p,
                           step=step, **kw) for p in PATHS)
  return fn


def _all_paths_extrapolate(height, width, corner, **kw):
  def fn(block, A, B, step):
    return tuple(fj.extrapolate(block, A, B, height, width, corner=corner,
                                path=p, step=step, **kw) for p in PATHS)
  return fn


_Base = helpers.NoX64LeakTestCase


# (name, height, width, origin, batch, step). Every origin kind (centre, the
# four corners, off-centre) with odd/even sizes, batch ranks 0-2, step != 1;
# opposite walks of equal length, one step longer back (even centres) or
# forward (off-centre, across), and longer by more.
UNROLL_CASES = (
    ("1x1_centre", 1, 1, None, (), 1.0),
    ("1x5_centre_b1_half", 1, 5, None, (2,), 0.5),
    ("4x1_centre_b2_neg", 4, 1, None, (2, 3), -0.3),
    ("5x6_centre", 5, 6, None, (), 1.0),
    ("6x7_top_left_b1", 6, 7, (0, 0), (2,), 0.5),
    ("7x4_top_right", 7, 4, (0, 3), (), -0.3),
    ("5x6_bottom_left_b2", 5, 6, (4, 0), (2, 1), 1.0),
    ("6x7_bottom_right", 6, 7, (5, 6), (), 0.5),
    ("7x4_off_centre_b1", 7, 4, (2, 1), (3,), -0.3),
)

# (name, height, width, corner, (h, w), batch, step); block sizes from 1x1 to
# the full map, 1xW and Hx1 strips, and blocks one line short of the map
# (a one-step walk, taken outside the loops).
EXTRAPOLATE_CASES = (
    ("tl_1x1", 5, 6, "top_left", (1, 1), (), 1.0),
    ("tr_2x3_b1", 6, 7, "top_right", (2, 3), (2,), 0.5),
    ("bl_3x2_neg", 7, 4, "bottom_left", (3, 2), (), -0.3),
    ("br_4x5_b2", 5, 6, "bottom_right", (4, 5), (2, 1), 1.0),
    ("tl_full", 4, 5, "top_left", (4, 5), (), 1.0),
    ("br_full_b1", 3, 3, "bottom_right", (3, 3), (2,), 0.5),
    ("tr_row_strip", 5, 6, "top_right", (1, 6), (), 1.0),
    ("bl_col_strip", 6, 5, "bottom_left", (6, 1), (), -0.3),
)


class ReferenceTest(_Base):
  """unroll / extrapolate against the naive numpy reference."""

  @chex.variants(with_jit=True)
  @parameterized.named_parameters(*UNROLL_CASES)
  def test_unroll_matches_reference_x64(self, height, width, origin, batch,
                                        step):
    q, A, B = _problem(0, batch, 5)
    with jax.enable_x64(True):
      maps = self.variant(_all_paths_unroll(height, width, origin))(
          q, A, B, jnp.float64(step))
      maps = jax.device_get(maps)
    r0, c0 = (height // 2, width // 2) if origin is None else origin
    for path, got in zip(PATHS, maps):
      self.assertEqual(got.dtype, np.float64)
      want = reference.unroll(q, A, B, height, width, origin, path, step)
      np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-11,
                                 err_msg=path)
      np.testing.assert_array_equal(got[..., r0, c0, :], q, err_msg=path)
    np.testing.assert_allclose(maps[2], 0.5 * (maps[0] + maps[1]), rtol=1e-13,
                               atol=1e-13)

  @chex.variants(with_jit=True)
  @parameterized.named_parameters(*EXTRAPOLATE_CASES)
  def test_extrapolate_matches_reference_x64(self, height, width, corner,
                                             block_hw, batch, step):
    block, A, B = _problem(1, batch, 4, block_hw=block_hw)
    with jax.enable_x64(True):
      maps = self.variant(_all_paths_extrapolate(height, width, corner))(
          block, A, B, jnp.float64(step))
      maps = jax.device_get(maps)
    h, w = block_hw
    r_lo = height - h if corner.startswith("bottom") else 0
    c_lo = width - w if corner.endswith("right") else 0
    for path, got in zip(PATHS, maps):
      want = reference.extrapolate(block, A, B, height, width, corner, path,
                                   step)
      np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-11,
                                 err_msg=path)
      # The block itself is returned unchanged (bit-exact).
      np.testing.assert_array_equal(
          got[..., r_lo:r_lo + h, c_lo:c_lo + w, :], block, err_msg=path)

  # The same comparisons un-jitted (eager), on a small subset: an eager call
  # re-traces and re-compiles its scans every time.
  @chex.variants(without_jit=True)
  @parameterized.named_parameters(UNROLL_CASES[2])
  def test_unroll_matches_reference_x64_eager(self, height, width, origin,
                                              batch, step):
    q, A, B = _problem(0, batch, 5)
    with jax.enable_x64(True):
      got = self.variant(functools.partial(
          fj.unroll, height=height, width=width, origin=origin,
          path="average"))(q, A, B, step=step)
    want = reference.unroll(q, A, B, height, width, origin, "average", step)
    np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-11)

  @chex.variants(without_jit=True)
  @parameterized.named_parameters(EXTRAPOLATE_CASES[1])
  def test_extrapolate_matches_reference_x64_eager(self, height, width, corner,
                                                   block_hw, batch, step):
    block, A, B = _problem(1, batch, 4, block_hw=block_hw)
    with jax.enable_x64(True):
      got = self.variant(functools.partial(
          fj.extrapolate, height=height, width=width, corner=corner,
          path="horizontal_first"))(block, A, B, step=step)
    want = reference.extrapolate(block, A, B, height, width, corner,
                                 "horizontal_first", step)
    np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-11)

  @chex.variants(with_jit=True)
  def test_float32_matches_reference(self):
    q, A, B = _problem(2, (2,), 8)
    q32, A32, B32 = (x.astype(np.float32) for x in (q, A, B))
    maps = self.variant(_all_paths_unroll(6, 7, (2, 5)))(q32, A32, B32, 0.7)
    for path, got in zip(PATHS, maps):
      self.assertEqual(got.dtype, jnp.float32)
      want = reference.unroll(q32, A32, B32, 6, 7, (2, 5), path, 0.7)
      np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5,
                                 err_msg=path)

  @chex.variants(with_jit=True)
  def test_extrapolate_float32_matches_reference(self):
    block, A, B = _problem(3, (), 8, block_hw=(2, 3))
    block, A, B = (x.astype(np.float32) for x in (block, A, B))
    maps = self.variant(_all_paths_extrapolate(5, 7, "bottom_right"))(
        block, A, B, 1.0)
    for path, got in zip(PATHS, maps):
      want = reference.extrapolate(block, A, B, 5, 7, "bottom_right", path)
      np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5,
                                 err_msg=path)

  @chex.variants(with_jit=True)
  @parameterized.parameters("vertical_first", "horizontal_first")
  def test_linear_baseline_matches_closed_form(self, path):
    # normalized=False is QB-Heat's linear autoregression: the map at (r, c)
    # is a product of powers of (I ± sA), (I ± sB) applied to q.
    q, A, B = _problem(4, (2,), 4)
    with jax.enable_x64(True):
      fn = functools.partial(fj.unroll, height=5, width=6, origin=(1, 4),
                             path=path, normalized=False)
      got = self.variant(fn)(q, A, B, step=0.6)
    want = ref_linear_unroll(q, A, B, 5, 6, (1, 4), path, 0.6)
    np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-11)
    # ... and the naive reference without normalization agrees.
    np.testing.assert_allclose(
        want, reference.unroll(q, A, B, 5, 6, (1, 4), path, 0.6,
                               normalized=False),
        rtol=1e-11, atol=1e-11)

  @chex.variants(with_jit=True)
  def test_extrapolate_linear_baseline(self):
    block, A, B = _problem(5, (), 4, block_hw=(2, 2))
    with jax.enable_x64(True):
      fn = functools.partial(fj.extrapolate, height=4, width=5,
                             corner="top_right", path="average",
                             normalized=False)
      got = self.variant(fn)(block, A, B)
    want = reference.extrapolate(block, A, B, 4, 5, "top_right", "average",
                                 normalized=False)
    np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-11)

  def test_reference_is_not_trivial(self):
    # Guards the reference itself: its paths differ, normalization matters.
    q, A, B = _problem(6, (), 4)
    vf = reference.unroll(q, A, B, 4, 4, None, "vertical_first")
    hf = reference.unroll(q, A, B, 4, 4, None, "horizontal_first")
    lin = reference.unroll(q, A, B, 4, 4, None, "vertical_first",
                           normalized=False)
    self.assertGreater(np.abs(vf - hf).max(), 1e-3)
    self.assertGreater(np.abs(vf - lin).max(), 1e-3)


class GradientTest(_Base):
  """jax.test_util.check_grads in float64 (reverse mode: the walks have a
  custom backward, so forward-mode differentiation is not supported)."""

  def test_unroll_grads_order2(self):
    q, A, B = _problem(10, (), 4)
    with jax.enable_x64(True):
      fn = jax.jit(lambda q, A, B, s: fj.unroll(
          q, A, B, 3, 3, origin=(1, 1), path="vertical_first", step=s))
      jtu.check_grads(fn, (q, A, B, jnp.float64(0.8)), order=2,
                      modes=("rev",))

  def test_extrapolate_grads(self):
    block, A, B = _problem(12, (), 4, block_hw=(2, 1))
    with jax.enable_x64(True):
      fn = jax.jit(lambda b, A, B, s: fj.extrapolate(
          b, A, B, 3, 3, corner="bottom_right", path="average", step=s))
      jtu.check_grads(fn, (block, A, B, jnp.float64(0.7)), order=1,
                      modes=("rev",))

  def test_second_order_of_16_bit_maps(self):
    # On CPU, 16-bit canvases cross the walks' loops as uint16 (the storage
    # view), which has no derivative, and "auto" stages out the Pallas
    # kernel for CUDA (C = 16), which has none either: derivatives of every
    # order must be those of the XLA walks without the view, here those of
    # the same bfloat16-valued problem computed in float32.
    q, A, B = (jnp.asarray(x, jnp.bfloat16) for x in _problem(14, (2,), 16))

    def second(q, A, B):
      def loss(q):
        return jnp.sum(jnp.sin(fj.unroll(q, A, B, 2, 2, step=0.7)
                               .astype(jnp.float32)))
      return jax.grad(lambda q: jnp.sum(
          jnp.square(jax.grad(loss)(q).astype(jnp.float32))))(q)

    got = jax.jit(second)(q, A, B)
    want = jax.jit(second)(*(x.astype(jnp.float32) for x in (q, A, B)))
    self.assertEqual(got.dtype, jnp.bfloat16)
    scale = float(jnp.abs(want).max())
    self.assertGreater(scale, 1e-2)
    np.testing.assert_allclose(np.asarray(got, np.float32), want,
                               atol=0.05 * scale, rtol=0)

  def test_forward_mode_is_refused(self):
    q, A, B = _problem(13, (), 4)
    fn = functools.partial(fj.unroll, A=A, B=B, height=2, width=2)
    with self.assertRaisesRegex(TypeError, "forward-mode"):
      jax.jvp(fn, (q,), (q,))

  def test_normalize_grads(self):
    z, _, _ = _problem(14, (3,), 5)
    with jax.enable_x64(True):
      jtu.check_grads(jax.jit(lambda z: fj.normalize(z, 1e-3)), (z,), order=2,
                      modes=("rev",))
      jtu.check_grads(jax.jit(lambda z: fj.normalize(z, 1e-3)), (z,), order=1,
                      modes=("fwd",))


def _grads(fn, x, A, B, step, cotangent):
  """Gradients of <cotangent, fn(x, A, B, step)> w.r.t. (x, A, B, step)."""
  def loss(*args):
    return jnp.sum(cotangent * fn(*args).astype(cotangent.dtype))
  return jax.grad(loss, argnums=(0, 1, 2, 3))(x, A, B, step)


def _grads_vs_reference(ours, reference, path, x, A, B, step, cotangent):
  """(our gradients, reference gradients) for one path.

  The reference differentiates the two single paths: "average" is their
  mean, so its gradients are the mean of theirs.
  """
  got = _grads(functools.partial(ours, path=path), x, A, B, step, cotangent)
  paths = PATHS[:2] if path == "average" else (path,)
  want = [_grads(functools.partial(reference, path=p), x, A, B, step,
                 cotangent) for p in paths]
  want = jax.tree_util.tree_map(lambda *g: sum(g) / len(g), *want)
  return got, want


# (name, height, width, origin, path, batch, normalized, step): the centre,
# a corner, an off-centre origin; every path; both normalizations; step != 1.
# (An unroll from a corner is an extrapolation of a 1x1 block there, which
# GRAD_EXTRAPOLATE_CASES covers at every corner.) One path per case: each
# compiled backward costs seconds on 2 cores. Walks one step longer than
# the opposite one (taken outside the loops): back at the even centre,
# forward across the off-centre row.
GRAD_UNROLL_CASES = (
    ("centre_vf", 5, 6, None, "vertical_first", (2,), True, 0.7),
    ("off_centre_hf", 6, 5, (2, 1), "horizontal_first", (2,), True, -1.3),
    ("bottom_left_avg_linear", 4, 4, (3, 0), "average", (), False, 0.5),
)

# (name, height, width, corner, (h, w), path, batch, normalized, step):
# every corner, blocks from 1x1 to a full-height column and a column one
# line short of the map.
GRAD_EXTRAPOLATE_CASES = (
    ("top_left_2x3_hf", 5, 6, "top_left", (2, 3), "horizontal_first", (2,),
     True, 0.7),
    ("top_right_1x1_avg", 4, 5, "top_right", (1, 1), "average", (), True,
     -0.5),
    ("bottom_left_3x2_vf_linear", 5, 4, "bottom_left", (3, 2),
     "vertical_first", (), False, 1.2),
    ("bottom_right_col_vf", 5, 5, "bottom_right", (4, 1), "vertical_first",
     (2,), True, 0.8),
)


class CustomBackwardTest(_Base):
  """The walks' custom backward against autodiff of a plain scan."""

  def _check(self, got, want, rtol, atol):
    for name, g, w in zip(("x", "A", "B", "step"), got, want):
      scale = float(np.max(np.abs(np.asarray(w, np.float64)))) or 1.0
      np.testing.assert_allclose(np.asarray(g, np.float64),
                                 np.asarray(w, np.float64), rtol=rtol,
                                 atol=atol * scale, err_msg=name)

  @chex.variants(with_jit=True)
  @parameterized.named_parameters(*GRAD_UNROLL_CASES)
  def test_unroll_x64(self, height, width, origin, path, batch, normalized,
                      step):
    q, A, B = _problem(50, batch, 5)
    cotangent = np.random.default_rng(51).normal(
        size=batch + (height, width, 5))
    with jax.enable_x64(True):
      got, want = self.variant(functools.partial(
          _grads_vs_reference,
          lambda q, A, B, s, path: fj.unroll(
              q, A, B, height, width, origin=origin, path=path, step=s,
              normalized=normalized),
          lambda q, A, B, s, path: reference.unroll(
              q, A, B, height, width, origin, path, s, normalized=normalized,
              xp=jnp), path))(
                  q, A, B, jnp.float64(step), cotangent)
    self._check(got, want, rtol=1e-10, atol=1e-11)

  @chex.variants(with_jit=True)
  @parameterized.named_parameters(*GRAD_EXTRAPOLATE_CASES)
  def test_extrapolate_x64(self, height, width, corner, block_hw, path, batch,
                           normalized, step):
    block, A, B = _problem(52, batch, 4, block_hw=block_hw)
    cotangent = np.random.default_rng(53).normal(
        size=batch + (height, width, 4))
    with jax.enable_x64(True):
      got, want = self.variant(functools.partial(
          _grads_vs_reference,
          lambda b, A, B, s, path: fj.extrapolate(
              b, A, B, height, width, corner=corner, path=path, step=s,
              normalized=normalized),
          lambda b, A, B, s, path: reference.extrapolate(
              b, A, B, height, width, corner, path, s, normalized=normalized,
              xp=jnp), path))(
                                                 block, A, B,
                                                 jnp.float64(step), cotangent)
    self._check(got, want, rtol=1e-10, atol=1e-11)

  @chex.variants(with_jit=True)
  def test_float32(self):
    q, A, B = _problem(54, (3,), 8)
    q, A, B = (x.astype(np.float32) for x in (q, A, B))
    cotangent = np.random.default_rng(55).normal(size=(3, 6, 5, 8)).astype(
        np.float32)
    got, want = self.variant(functools.partial(
        _grads_vs_reference,
        lambda q, A, B, s, path: fj.unroll(q, A, B, 6, 5, origin=(2, 1),
                                           path=path, step=s),
        lambda q, A, B, s, path: reference.unroll(q, A, B, 6, 5, (2, 1),
                                                  path, s, xp=jnp),
        "vertical_first"))(q, A, B, jnp.float32(0.8), cotangent)
    self._check(got, want, rtol=2e-5, atol=2e-5)

  @chex.variants(with_jit=True)
  def test_bfloat16_against_float32_carry(self):
    # bfloat16 maps: the custom backward re-reads states rounded to
    # bfloat16, the reference carries them in float32 and is differentiated
    # in float32 from the same (bfloat16-valued) inputs. The gradients agree
    # to 3 % of their largest entry (measured: under 1 %).
    block, A, B = _problem(56, (2,), 16, scale=0.2, block_hw=(2, 2))
    block, A, B = (jnp.asarray(x, jnp.bfloat16) for x in (block, A, B))
    cotangent = np.random.default_rng(57).normal(size=(2, 6, 7, 16)).astype(
        np.float32)
    got, want = self.variant(functools.partial(
        _grads_vs_reference,
        lambda b, A, B, s, path: fj.extrapolate(
            b, A, B, 6, 7, corner="bottom_right", path=path, step=s),
        lambda b, A, B, s, path: reference.extrapolate(
            b.astype(jnp.float32), A.astype(jnp.float32),
            B.astype(jnp.float32), 6, 7, "bottom_right", path, s, xp=jnp),
        "horizontal_first"))(
                block, A, B, jnp.float32(0.9), cotangent)
    self.assertEqual([g.dtype for g in got],
                     [jnp.bfloat16, jnp.bfloat16, jnp.bfloat16, jnp.float32])
    self._check(got, want, rtol=0.0, atol=0.03)


class PropertyTest(_Base):

  @chex.variants(with_jit=True)
  @parameterized.parameters(*CORNERS)
  def test_corner_unroll_equals_1x1_extrapolate(self, corner):
    q, A, B = _problem(20, (2,), 6)
    q, A, B = (x.astype(np.float32) for x in (q, A, B))
    H, W = 4, 5
    origin = (H - 1 if corner.startswith("bottom") else 0,
              W - 1 if corner.endswith("right") else 0)

    def fn(q, A, B):
      return [(fj.unroll(q, A, B, H, W, origin=origin, path=p, step=0.8),
               fj.extrapolate(q[..., None, None, :], A, B, H, W,
                              corner=corner, path=p, step=0.8))
              for p in PATHS[:2]]  # "average" is their mean (tested apart)

    for path, (u, e) in zip(PATHS, self.variant(fn)(q, A, B)):
      chex.assert_trees_all_close(u, e, rtol=1e-6, atol=1e-6,
                                  custom_message=path)
      self.assertGreater(float(jnp.abs(u - q[..., None, None, :]).max()), 1e-2)

  @chex.variants(with_jit=True)
  def test_shift_equivariance(self):
    # normalize is invariant to a common shift, so every increment is too.
    q, A, B = _problem(21, (2,), 8)
    q, A, B = (x.astype(np.float32) for x in (q, A, B))
    fn = self.variant(functools.partial(fj.unroll, height=5, width=4,
                                        path="horizontal_first"))
    base, shifted = fn(q, A, B), fn(q + 3.5, A, B)
    chex.assert_trees_all_close(shifted, base + 3.5, rtol=1e-5, atol=1e-5)
    # Not a tautology: the un-normalized baseline is not shift-equivariant.
    lin = functools.partial(reference.unroll, height=5, width=4,
                            normalized=False)
    self.assertGreater(np.abs(lin(q + 3.5, A, B) - lin(q, A, B) - 3.5).max(),
                       1e-2)

  @chex.variants(with_jit=True)
  def test_step_zero_gives_constant_map(self):
    q, A, B = _problem(22, (3,), 6)
    q, A, B = (x.astype(np.float32) for x in (q, A, B))
    m = self.variant(functools.partial(fj.unroll, height=4, width=3,
                                       path="average", step=0.0))(q, A, B)
    chex.assert_shape(m, (3, 4, 3, 6))
    np.testing.assert_array_equal(
        m, np.broadcast_to(q[:, None, None, :], m.shape))

  @chex.variants(with_jit=True)
  @parameterized.named_parameters(
      ("float32", jnp.float32), ("bfloat16", jnp.bfloat16))
  def test_exact_seed_and_block(self, dtype):
    q, A, B = _problem(24, (2,), 6)
    q, A, B = (jnp.asarray(x, dtype) for x in (q, A, B))

    def fn(q, A, B):
      u = fj.unroll(q, A, B, 4, 3, origin=(3, 1), path="average")
      e = fj.extrapolate(u[..., 1:, :2, :], A, B, 6, 4, corner="bottom_left",
                         path="vertical_first", step=-0.4)
      return u, e

    u, e = self.variant(fn)(q, A, B)
    self.assertEqual(u.dtype, dtype)
    self.assertEqual(e.dtype, dtype)
    np.testing.assert_array_equal(
        np.asarray(u[..., 3, 1, :], np.float32), np.asarray(q, np.float32))
    np.testing.assert_array_equal(
        np.asarray(e[..., 3:, :2, :], np.float32),
        np.asarray(u[..., 1:, :2, :], np.float32))

  @chex.variants(with_jit=True, with_pmap=True)
  def test_batch_axis_pmap(self):
    # Leading axis of 4 mapped over the 4 forced CPU devices (or batched
    # under jit); each entry must equal the un-batched unroll of its q.
    self.assertEqual(jax.device_count(), 4)
    q, A, B = _problem(25, (4, 2), 6)
    q, A, B = (x.astype(np.float32) for x in (q, A, B))
    fn = functools.partial(fj.unroll, height=4, width=5, origin=(1, 3),
                           path="vertical_first", step=0.9)
    got = self.variant(fn, broadcast_args_to_devices=False, reduce_fn=None,
                       in_axes=(0, None, None))(q, A, B)
    chex.assert_shape(got, (4, 2, 4, 5, 6))
    want = reference.unroll(q, A, B, 4, 5, (1, 3), "vertical_first", 0.9)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)

  @chex.variants(with_jit=True, with_pmap=True)
  def test_extrapolate_batch_axis_pmap(self):
    self.assertEqual(jax.device_count(), 4)
    block, A, B = _problem(26, (4,), 5, block_hw=(2, 2))
    block, A, B = (x.astype(np.float32) for x in (block, A, B))
    fn = functools.partial(fj.extrapolate, height=3, width=4,
                           corner="top_right", path="horizontal_first")
    got = self.variant(fn, broadcast_args_to_devices=False, reduce_fn=None,
                       in_axes=(0, None, None))(block, A, B)
    chex.assert_shape(got, (4, 3, 4, 5))
    want = reference.extrapolate(block, A, B, 3, 4, "top_right",
                                 "horizontal_first")
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)

  @chex.variants(with_jit=True)
  def test_vmap_equals_batched(self):
    q, A, B = _problem(27, (3, 2), 6)
    q, A, B = (x.astype(np.float32) for x in (q, A, B))
    fn = functools.partial(fj.unroll, height=3, width=4, path="vertical_first",
                           step=0.5)
    batched = self.variant(fn)(q, A, B)
    vmapped = self.variant(jax.vmap(jax.vmap(fn, (0, None, None)),
                                    (0, None, None)))(q, A, B)
    chex.assert_shape(batched, (3, 2, 3, 4, 6))
    chex.assert_trees_all_close(vmapped, batched, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(
        batched, reference.unroll(q, A, B, 3, 4, None, "vertical_first", 0.5),
        rtol=2e-5, atol=2e-5)

  @chex.variants(with_jit=True)
  def test_dtypes(self):
    q, A, B = _problem(28, (2,), 8, scale=0.1)
    fn = self.variant(functools.partial(fj.unroll, height=6, width=6,
                                        path="vertical_first"))
    m32 = fn(*(x.astype(np.float32) for x in (q, A, B)))
    self.assertEqual(m32.dtype, jnp.float32)
    m16 = fn(*(jnp.asarray(x, jnp.bfloat16) for x in (q, A, B)))
    self.assertEqual(m16.dtype, jnp.bfloat16)
    chex.assert_tree_all_finite(m16)
    # bfloat16 in, state carried in float32: close to the float32 map.
    scale = float(jnp.abs(m32).max())
    np.testing.assert_allclose(np.asarray(m16, np.float32), m32,
                               atol=0.03 * scale, rtol=0.0)
    with jax.enable_x64(True):
      m64 = fn(q, A, B)
      self.assertEqual(m64.dtype, jnp.float64)
    np.testing.assert_allclose(m64, m32, rtol=1e-5, atol=1e-5)

  def test_bfloat16_state_is_carried_in_float32(self):
    # Values near 100 (bfloat16 spacing 0.5) with increments of ~0.05 per
    # step: a bfloat16 state would round every step away and never move.
    rng = np.random.default_rng(32)
    q = 100.0 + rng.normal(size=(8,))
    A = 0.05 * np.eye(8)
    fn = jax.jit(functools.partial(fj.unroll, height=1, width=64,
                                   origin=(0, 0)))
    m16 = fn(*(jnp.asarray(x, jnp.bfloat16) for x in (q, A, A)))
    q32 = np.asarray(jnp.asarray(q, jnp.bfloat16), np.float32)
    m32 = fn(q32, *(np.asarray(jnp.asarray(x, jnp.bfloat16), np.float32)
                    for x in (A, A)))
    self.assertGreater(np.abs(m32[0, -1] - q32).max(), 2.0)
    np.testing.assert_allclose(np.asarray(m16[0, -1], np.float32), m32[0, -1],
                               atol=0.6, rtol=0)

  def test_mixed_dtypes_follow_jax_promotion(self):
    # bfloat16 activations with float32 parameters give float32 maps, as
    # jnp.result_type(q, A, B) says (the documented contract).
    q = jnp.ones((2, 4), jnp.bfloat16)
    block = jnp.ones((2, 2, 4), jnp.bfloat16)
    A = jnp.eye(4, dtype=jnp.float32)
    self.assertEqual(jax.eval_shape(_unroll(3, 3), q, A, A).dtype, jnp.float32)
    self.assertEqual(jax.eval_shape(_extrapolate(3, 3), block, A, A).dtype,
                     jnp.float32)
    self.assertEqual(jax.eval_shape(_unroll(3, 3), q, A.astype(jnp.bfloat16),
                                    A.astype(jnp.bfloat16)).dtype, jnp.bfloat16)

  def test_extrapolate_dtypes(self):
    # Computed values of both dtypes: test_exact_seed_and_block.
    block, A, B = _problem(29, (), 4, block_hw=(2, 2))
    fn = functools.partial(fj.extrapolate, height=3, width=3,
                           corner="bottom_left")
    for dtype in (jnp.float32, jnp.bfloat16):
      m = jax.eval_shape(fn, *(jnp.asarray(x, dtype) for x in (block, A, B)))
      self.assertEqual(m.dtype, dtype)
    with jax.enable_x64(True):
      self.assertEqual(jax.eval_shape(fn, block, A, B).dtype, jnp.float64)

  @chex.variants(with_jit=True)
  def test_constant_q_and_tiny_maps_are_finite(self):
    _, A, B = _problem(30, (), 5)
    A, B = A.astype(np.float32), B.astype(np.float32)
    const = np.full((2, 5), 0.7, np.float32)  # zero variance

    def fn(q, A, B):
      return (fj.unroll(q, A, B, 3, 4, path="average"),
              fj.unroll(q[0], A, B, 1, 1),
              fj.extrapolate(q[:, None, None, :], A, B, 1, 1))

    m, one, one_e = self.variant(fn)(const, A, B)
    chex.assert_tree_all_finite((m, one, one_e))
    # ẑ of a constant vector is 0: nothing moves.
    np.testing.assert_array_equal(m, np.broadcast_to(const[:, None, None],
                                                     m.shape))
    chex.assert_shape(one, (1, 1, 5))
    np.testing.assert_array_equal(one[0, 0], const[0])
    np.testing.assert_array_equal(one_e[:, 0, 0], const)

  @parameterized.named_parameters(
      ("float32", jnp.float32), ("bfloat16", jnp.bfloat16))
  def test_large_unroll_is_finite(self, dtype):
    rng = np.random.default_rng(31)
    C = 8
    q = jnp.asarray(rng.normal(size=(C,)), dtype)
    A = jnp.asarray(0.1 * rng.normal(size=(C, C)) / np.sqrt(C), dtype)
    B = jnp.asarray(0.1 * rng.normal(size=(C, C)) / np.sqrt(C), dtype)
    m = jax.jit(functools.partial(fj.unroll, height=256, width=256))(q, A, B)
    chex.assert_shape(m, (256, 256, C))
    self.assertEqual(m.dtype, dtype)
    chex.assert_tree_all_finite(m)
    # The walk goes somewhere: the far corner differs from q.
    self.assertGreater(float(jnp.abs(m[0, 0].astype(jnp.float32) -
                                     q.astype(jnp.float32)).max()), 0.1)


class NormalizeTest(_Base):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(("default_eps", 1e-6), ("large_eps", 0.5))
  def test_against_numpy(self, eps):
    rng = np.random.default_rng(40)
    z = (0.3 * rng.normal(size=(2, 3, 7)) + 2.0).astype(np.float32)
    got = self.variant(functools.partial(fj.normalize, eps=eps))(z)
    mean = z.astype(np.float64).mean(-1, keepdims=True)
    var = z.astype(np.float64).var(-1, keepdims=True, ddof=0)  # population
    want = (z - mean) / np.sqrt(var + eps)  # eps inside the square root
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    self.assertEqual(got.dtype, jnp.float32)
    if eps == 0.5:  # eps placement and ddof are distinguishable here
      std1 = z.std(-1, keepdims=True, ddof=1)
      self.assertGreater(
          np.abs(want - (z - mean) / np.sqrt(std1 ** 2 + eps)).max(), 1e-3)
      self.assertGreater(
          np.abs(want - (z - mean) / (np.sqrt(var) + eps)).max(), 1e-3)

  def test_reference_normalize_matches(self):
    z = np.array([1.0, 2.0, 4.0, -3.0])
    np.testing.assert_allclose(reference.normalize(z, 0.1),
                               (z - z.mean()) / np.sqrt(z.var() + 0.1))
    with jax.enable_x64(True):
      np.testing.assert_allclose(fj.normalize(z, 0.1),
                                 reference.normalize(z, 0.1),
                                 rtol=1e-14)

  def test_dtypes_and_constant(self):
    z = np.full((3, 4), 2.0, np.float32)
    out = fj.normalize(z)
    np.testing.assert_array_equal(out, np.zeros_like(z))
    self.assertEqual(fj.normalize(jnp.ones((2, 3), jnp.bfloat16)).dtype,
                     jnp.bfloat16)
    with jax.enable_x64(True):
      self.assertEqual(fj.normalize(np.arange(3.0)).dtype, jnp.float64)

  def test_errors(self):
    with self.assertRaisesRegex(ValueError, "z must have a channel axis"):
      fj.normalize(jnp.float32(1.0))
    with self.assertRaisesRegex(TypeError, "z must have a floating dtype"):
      fj.normalize(jnp.arange(3))


def _dot_precisions(jaxpr) -> list:
  """The ``precision`` of every dot_general in a jaxpr and its sub-jaxprs."""
  found = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "dot_general":
      found.append(eqn.params["precision"])
    for value in eqn.params.values():
      for sub in value if isinstance(value, (tuple, list)) else (value,):
        if isinstance(sub, jax.extend.core.ClosedJaxpr):
          found += _dot_precisions(sub.jaxpr)
        elif isinstance(sub, jax.extend.core.Jaxpr):
          found += _dot_precisions(sub)
  return found


class PrecisionTest(_Base):

  @parameterized.named_parameters(
      ("none", None, None),
      ("name", "highest", jax.lax.Precision.HIGHEST),
      ("upper_case_name", "HIGH", jax.lax.Precision.HIGH),
      ("alias", "tensorfloat32", jax.lax.Precision.HIGH),
      ("enum", jax.lax.Precision.DEFAULT, jax.lax.Precision.DEFAULT),
  )
  def test_reaches_every_matmul_forward_and_backward(self, precision, want):
    q, A, B = (x.astype(np.float32) for x in _problem(60, (2,), 4))

    def loss(q, A, B):
      return jnp.sum(jnp.square(fj.unroll(q, A, B, 3, 4, path="average",
                                          precision=precision)))

    forward = _dot_precisions(jax.make_jaxpr(
        lambda q, A, B: fj.extrapolate(q[:, None, None], A, B, 2, 2,
                                       precision=precision))(q, A, B).jaxpr)
    backward = _dot_precisions(
        jax.make_jaxpr(jax.grad(loss, argnums=(0, 1, 2)))(q, A, B).jaxpr)
    # Forward: one matmul per walk loop; backward: the forward's again plus
    # two per backward loop step (Gᵢ Mᵀ and the moment n(z)ᵀ Gᵢ).
    self.assertLen(forward, 2)
    self.assertGreaterEqual(len(backward), 3 * 4)
    expected = None if want is None else (want, want)
    self.assertEqual(set(forward + backward), {expected})

  def test_names_are_case_insensitive_and_complete(self):
    for name in fj.core.PRECISION_NAMES:
      self.assertEqual(fj.core._check_precision(name.upper()),
                       jax.lax.Precision(name))

  def test_run_configs_take_the_core_vocabularies(self):
    # A config accepts exactly the walks' precisions (and None), paths and
    # implementations.
    # pylint: disable-next=g-import-not-at-top
    from finola_jax.train import run_config
    self.assertEqual(run_config.MATMUL_PRECISIONS,
                     (None,) + fj.core.PRECISION_NAMES)
    for name in run_config.MATMUL_PRECISIONS:
      fj.core._check_precision(name)
    self.assertEqual(run_config.PATHS, fj.core.PATHS)
    self.assertEqual(run_config.UNROLL_IMPLEMENTATIONS,
                     fj.core.IMPLEMENTATIONS)


class ImplementationTest(_Base):

  def test_select_per_platform(self):
    select = fj.core.select_implementation
    self.assertEqual(select("auto", jnp.bfloat16, 1024, 8, platform="cpu"),
                     ("xla", False))
    self.assertEqual(select("auto", jnp.bfloat16, 1024, 8, platform="rocm"),
                     ("xla", False))
    self.assertEqual(select("auto", jnp.bfloat16, 1024, 8, platform="cuda"),
                     ("pallas", False))
    # Interpreted off a CUDA GPU.
    self.assertEqual(select("pallas", jnp.float32, 8, 8, platform="cpu"),
                     ("pallas", True))
    self.assertEqual(select("pallas", jnp.float32, 8, 8, platform="cuda"),
                     ("pallas", False))
    # This machine's default device is a CPU.
    self.assertEqual(select("pallas", jnp.float32, 8, 8), ("pallas", True))

  def test_auto_asks_the_kernel_on_cuda(self):
    asked = []

    def is_supported(dtype, channels, image_elements):
      asked.append((dtype, channels, image_elements))
      return channels % 128 == 0

    kernel = mock.Mock(is_supported=is_supported)
    with mock.patch.object(fj.core, "_walk_kernel", lambda: kernel):
      select = functools.partial(fj.core.select_implementation,
                                 platform="cuda")
      self.assertEqual(select("auto", jnp.bfloat16, 256, 2**20),
                       ("pallas", False))
      self.assertEqual(select("auto", jnp.float16, 100, 64), ("xla", False))
      self.assertEqual(select("xla", jnp.bfloat16, 256, 64), ("xla", False))
      # float32 walks are faster as scans: the kernel is not asked.
      self.assertEqual(select("auto", jnp.float32, 256, 64), ("xla", False))
      # The kernel is asked about one map: 4·5·96 elements.
      jax.eval_shape(functools.partial(fj.unroll, height=4, width=5),
                     jnp.zeros((2, 3, 96), jnp.bfloat16),
                     jnp.eye(96, dtype=jnp.bfloat16),
                     jnp.eye(96, dtype=jnp.bfloat16))
    self.assertEqual(asked, [(jnp.dtype(jnp.bfloat16), 256, 2**20),
                             (jnp.dtype(jnp.float16), 100, 64),
                             (jnp.dtype(jnp.bfloat16), 96, 4 * 5 * 96)])

  @parameterized.named_parameters(("auto", "auto"), ("xla", "xla"))
  def test_lowering_platform_decides_not_the_default_backend(
      self, implementation):
    # This machine's default backend is the CPU; a computation lowered for
    # CUDA must still get CUDA's choices: the Pallas kernel for "auto"
    # 16-bit maps and no uint16 storage view (that is for CPU only).
    q = jnp.zeros((2, 16), jnp.bfloat16)
    A = jnp.eye(16, dtype=jnp.bfloat16)
    traced = jax.jit(functools.partial(
        fj.unroll, height=3, width=4, implementation=implementation)).trace(
            q, A, A)
    on_cpu = traced.lower(lowering_platforms=("cpu",)).as_text()
    self.assertIn("ui16", on_cpu)
    self.assertNotIn("triton", on_cpu)
    try:
      on_cuda = traced.lower(lowering_platforms=("cuda",)).as_text()
    except RuntimeError as e:
      if "No supported GPU devices" in str(e):  # jax >= 0.11 without a GPU.
        self.skipTest("this jax lowers Triton kernels only with a GPU")
      raise
    self.assertNotIn("ui16", on_cuda)
    if implementation == "auto":
      self.assertIn("triton", on_cuda)
    else:
      self.assertNotIn("triton", on_cuda)

  def test_auto_and_xla_agree(self):
    q, A, B = (x.astype(np.float32) for x in _problem(61, (2,), 4))
    fn = jax.jit(lambda q, A, B: [
        fj.unroll(q, A, B, 3, 4, implementation=i) for i in ("auto", "xla")])
    auto, xla = fn(q, A, B)
    np.testing.assert_array_equal(auto, xla)

  def test_pallas_interpreted_matches_xla(self):
    # Both backends implement the same two phase functions; the interpreted
    # kernel is slow, so one small map, one path, forward and gradients.
    if importlib.util.find_spec("finola_jax.walk_kernel") is None:
      self.skipTest("finola_jax.walk_kernel is not in this tree")
    q, A, B = (x.astype(np.float32) for x in _problem(62, (2,), 16))

    def loss(implementation, q, A, B, s):
      m = fj.unroll(q, A, B, 2, 3, origin=(1, 1), step=s,
                    implementation=implementation)
      return jnp.sum(jnp.sin(m)), m

    grad = lambda i: jax.jit(jax.grad(functools.partial(loss, i),
                                      argnums=(0, 1, 2, 3),
                                      has_aux=True))(q, A, B, 0.8)
    chex.assert_trees_all_close(grad("pallas"), grad("xla"), rtol=1e-4,
                                atol=1e-4)


def _f32(*shape):
  return np.ones(shape, np.float32) + np.arange(shape[-1], dtype=np.float32)


_Q, _A, _B = _f32(2, 4), 0.1 * _f32(4, 4), 0.1 * _f32(4, 4)
_BLOCK = _f32(2, 2, 4)
_EYE_INT = np.eye(4, dtype=np.int32)


def _unroll(*size, **kw):
  return lambda q, A, B: fj.unroll(q, A, B, *size, **kw)


def _extrapolate(*size, **kw):
  return lambda block, A, B: fj.extrapolate(block, A, B, *size, **kw)


# (name, function of the array arguments, array arguments, exception, regex).
BAD_INPUTS = (
    ("q_rank0", _unroll(3, 3), (np.float32(1.0), _A, _B),
     ValueError, r"q must have shape \[\.\.\., C\]"),
    ("A_not_square", _unroll(3, 3), (_Q, _f32(4, 3), _B),
     ValueError, r"A must be a square"),
    ("A_rank1", _unroll(3, 3), (_Q, _f32(4), _B),
     ValueError, r"A must be a square"),
    ("B_not_square", _unroll(3, 3), (_Q, _A, _f32(3, 4)),
     ValueError, r"B must be a square"),
    ("A_wrong_C", _unroll(3, 3), (_Q, _f32(5, 5), _B),
     ValueError, r"A is 5×5 but q has C=4 .*A must be 4×4"),
    ("B_wrong_C", _unroll(3, 3), (_Q, _A, _f32(3, 3)),
     ValueError, r"B is 3×3 but q has C=4"),
    ("height_zero", _unroll(0, 3), (_Q, _A, _B),
     ValueError, r"height must be at least 1"),
    ("width_negative", _unroll(3, -2), (_Q, _A, _B),
     ValueError, r"width must be at least 1"),
    ("height_float", _unroll(3.0, 3), (_Q, _A, _B),
     TypeError, r"height must be a Python int"),
    ("width_bool", _unroll(3, True), (_Q, _A, _B),
     TypeError, r"width must be a Python int"),
    ("width_array", _unroll(3, np.float32(3)), (_Q, _A, _B),
     TypeError, r"width must be a Python int"),
    ("origin_row_outside", _unroll(3, 4, origin=(3, 0)), (_Q, _A, _B),
     ValueError, r"origin \(3, 0\) is outside the 3×4 map"),
    ("origin_col_outside", _unroll(3, 4, origin=(0, 4)), (_Q, _A, _B),
     ValueError, r"origin \(0, 4\) is outside"),
    ("origin_negative", _unroll(3, 4, origin=(-1, 0)), (_Q, _A, _B),
     ValueError, r"origin \(-1, 0\) is outside"),
    ("origin_not_pair", _unroll(3, 4, origin=(1, 1, 1)), (_Q, _A, _B),
     ValueError, r"origin must be a \(row, column\) pair"),
    ("origin_float", _unroll(3, 4, origin=(1.7, 0)), (_Q, _A, _B),
     TypeError, r"origin must hold two ints"),
    ("unroll_unknown_path", _unroll(3, 3, path="diag"), (_Q, _A, _B),
     ValueError, r"Unknown path 'diag'"),
    ("step_not_scalar", _unroll(3, 3, step=np.ones(2)), (_Q, _A, _B),
     ValueError, r"step must be a scalar"),
    ("q_int", _unroll(3, 3), (np.ones((4,), np.int32), _A, _B),
     TypeError, r"q must have a floating dtype"),
    ("A_int", _unroll(3, 3), (_Q, _EYE_INT, _B),
     TypeError, r"A must have a floating dtype"),
    ("B_int", _unroll(3, 3), (_Q, _A, _EYE_INT),
     TypeError, r"B must have a floating dtype"),
    ("block_rank2", _extrapolate(3, 3), (_f32(2, 4), _A, _B),
     ValueError, r"block must have shape \[\.\.\., h, w, C\]"),
    ("block_too_tall", _extrapolate(1, 3), (_BLOCK, _A, _B),
     ValueError, r"block is 2×2, larger than the 1×3 map"),
    ("block_too_wide", _extrapolate(3, 1), (_BLOCK, _A, _B),
     ValueError, r"block is 2×2, larger than the 3×1 map"),
    ("block_empty", _extrapolate(3, 3), (_f32(0, 2, 4), _A, _B),
     ValueError, r"block must be at least 1×1"),
    ("extrapolate_unknown_corner", _extrapolate(3, 3, corner="centre"),
     (_BLOCK, _A, _B), ValueError, r"Unknown corner 'centre'"),
    ("extrapolate_unknown_path", _extrapolate(3, 3, path="Average"),
     (_BLOCK, _A, _B), ValueError, r"Unknown path 'Average'"),
    ("extrapolate_height_zero", _extrapolate(0, 3), (_BLOCK, _A, _B),
     ValueError, r"height must be at least 1"),
    ("extrapolate_width_float", _extrapolate(3, 2.5), (_BLOCK, _A, _B),
     TypeError, r"width must be a Python int"),
    ("block_int", _extrapolate(3, 3), (np.ones((1, 1, 4), np.int32), _A, _B),
     TypeError, r"block must have a floating dtype"),
    ("extrapolate_A_wrong_C", _extrapolate(3, 3), (_BLOCK, _f32(3, 3), _B),
     ValueError, r"A is 3×3 but block has C=4"),
    ("extrapolate_B_int", _extrapolate(3, 3), (_BLOCK, _A, _EYE_INT),
     TypeError, r"B must have a floating dtype"),
    ("extrapolate_step_not_scalar", _extrapolate(3, 3, step=np.ones((1, 1))),
     (_BLOCK, _A, _B), ValueError, r"step must be a scalar"),
    ("precision_unknown", _unroll(3, 3, precision="bogus"), (_Q, _A, _B),
     ValueError, r"Unknown precision 'bogus'"),
    ("precision_int", _unroll(3, 3, precision=2), (_Q, _A, _B),
     ValueError, r"Unknown precision 2"),
    ("extrapolate_precision_unknown", _extrapolate(3, 3, precision="tf32"),
     (_BLOCK, _A, _B), ValueError, r"Unknown precision 'tf32'"),
    ("implementation_unknown", _unroll(3, 3, implementation="cuda"),
     (_Q, _A, _B), ValueError, r"Unknown implementation 'cuda'"),
    ("extrapolate_implementation_unknown",
     _extrapolate(3, 3, implementation="XLA"), (_BLOCK, _A, _B), ValueError,
     r"Unknown implementation 'XLA'"),
)


class BadInputTest(_Base):

  @parameterized.named_parameters(*BAD_INPUTS)
  def test_raises(self, fn, args, exception, regex):
    with self.assertRaisesRegex(exception, regex):
      fn(*args)

  @parameterized.named_parameters(*BAD_INPUTS)
  def test_raises_before_tracing(self, fn, args, exception, regex):
    # Under eval_shape every array argument is an abstract tracer: the
    # checks run on static shapes/dtypes, so the same error must come out
    # (not a tracer or concretization error, and nothing is compiled).
    with self.assertRaisesRegex(exception, regex):
      jax.eval_shape(fn, *args)

  def test_good_inputs_do_not_raise_under_eval_shape(self):
    out = jax.eval_shape(_unroll(3, 3, origin=(2, 2)), _Q, _A, _B)
    self.assertEqual(out.shape, (2, 3, 3, 4))
    out = jax.eval_shape(_extrapolate(2, 2, corner="bottom_right"),
                         _BLOCK, _A, _B)
    self.assertEqual(out.shape, (2, 2, 4))


if __name__ == "__main__":
  absltest.main()


def test_import_pulls_in_no_training_stack():
  # Users call finola_jax.unroll from their own JAX code: importing the core
  # must not import TensorFlow, flax or the other [train] dependencies.
  code = ("import sys, finola_jax; "
          "print(sorted(m for m in ('tensorflow', 'flax', 'optax', 'orbax', "
          "'clu', 'tensorflow_datasets') if m in sys.modules))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                       text=True, check=True, cwd=helpers.REPO_ROOT)
  assert out.stdout.strip() == "[]", out.stdout
