# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Tests for finola_jax.walk_kernel (Pallas interpret mode on the CPU).

The reference is ``tests/reference.py``'s ``grow``, independent of the
kernels: its float64 numpy loop for the forward canvas, and ``jax.vjp`` of
the same loop in ``jnp`` (float64) for the three gradients. Each case runs
``grow_forward`` and ``grow_backward`` once; the cases together cover
ragged lane counts, ``h > 1`` blocks, ``num_back = 0`` and
``num_forward = 0``, ``Q > 1``, normalized and not, float32, bfloat16 and
float16, several column tiles per program, the two-phase forward and the
default configuration, all with ``step ≠ 1``.

Tolerances (maximum error over maximum magnitude): float32 1e-5 (the CPU
interpreter multiplies in float32; only summation order differs), 16-bit
maps 3e-2 (operands rounded to 8 or 11 bits every step, and the backward
pass re-reads the rounded canvas).

Interpret mode compiles a large XLA program per kernel, so the programs are
compiled with XLA's backend optimizations off. ``CudaLoweringTest`` lowers
the kernels through Pallas → Triton IR for CUDA, which runs without a GPU on
jax 0.10 (Triton's PTX compile needs one): the default configurations of
every benchmark phase, the candidates ``tools/gpu_kernel_check.py``
times at the largest shape, and the variants (two-phase and single-phase
forward, no column splits, HIGH/HIGHEST float32, no normalization).
"""

import dataclasses
import functools
import re
from unittest import mock
import warnings

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np

from finola_jax import walk_kernel as wk
from tests import reference

EPS = 1e-6
FAST_COMPILE = {"xla_backend_optimization_level": 0,
                "xla_llvm_disable_expensive_passes": True}


def _run(fn, *args):
  """Runs ``jit(fn)(*args)``, compiled quickly (interpret mode is big)."""
  compiled = jax.jit(fn).trace(*args).lower().compile(
      compiler_options=FAST_COMPILE)
  return compiled(*args)


def _relative_error(actual, expected):
  actual = np.asarray(actual, np.float64)
  expected = np.asarray(expected, np.float64)
  return np.max(np.abs(actual - expected)) / np.max(np.abs(expected))


# --------------------------------------------------------------------------
# Cases: (name, dtype, (P, h, Q, C), num_back, num_forward, normalized, step,
# config). Lanes = directions · P · Q.
CASES = (
    # 30 lanes over blocks of 16 (ragged, both directions in one block),
    # h = 2, Q = 5, walks of unequal length, two column tiles per program.
    ("f32_ragged_q5_h2", jnp.float32, (3, 2, 5, 32), 3, 2, True, 0.7,
     wk.KernelConfig(block_walkers=16, block_columns=16, block_k=16)),
    # Forward walkers only, 20 lanes, two-phase forward, K in 4 chunks.
    ("bf16_forward_only_two_phase", jnp.bfloat16, (20, 1, 1, 64), 0, 3, True,
     1.3, wk.KernelConfig(block_walkers=16, block_columns=32, block_k=16,
                          two_phase=True)),
    # Backward walkers only, not normalized, h = 3, Q = 2.
    ("f32_back_only_raw", jnp.float32, (2, 3, 2, 16), 2, 0, False, 0.5,
     wk.KernelConfig(block_walkers=32, block_columns=16, block_k=16)),
    # The paper's layout: h = 1, both directions from the same line (their
    # G_0 land on one line), default configuration.
    ("f16_centre_default", jnp.float16, (4, 1, 1, 48), 2, 3, True, 0.9, None),
)


def _case_data(dtype, shape, num_back, num_forward, seed=0):
  rng = np.random.default_rng(seed)
  num_p, height, num_q, channels = shape
  block = rng.normal(size=shape)
  # A contracting-ish matrix keeps the walk in range for a few steps.
  matrix_t = 0.4 * rng.normal(size=(channels, channels)) / np.sqrt(channels)
  cotangent = rng.normal(
      size=(num_p, num_back + height + num_forward, num_q, channels))
  # Round to the map dtype once, so reference and kernel see the same inputs.
  cast = lambda x: np.asarray(jnp.asarray(x, dtype), np.float64)
  return cast(block), cast(matrix_t), cast(cotangent)


class WalkKernelTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    assert not jax.config.jax_enable_x64, "x64 leaked into this test"

  def tearDown(self):
    assert not jax.config.jax_enable_x64, "x64 leaked out of this test"
    super().tearDown()

  @parameterized.named_parameters(*CASES)
  def test_matches_reference(self, dtype, shape, num_back, num_forward,
                             normalized, step, config):
    block, matrix_t, cotangent = _case_data(dtype, shape, num_back,
                                            num_forward)
    tolerance = 1e-5 if dtype == jnp.float32 else 3e-2
    kwargs = dict(num_back=num_back, num_forward=num_forward, eps=EPS,
                  normalized=normalized, precision=jax.lax.Precision.HIGHEST,
                  interpret=True, config=config)
    args = (jnp.asarray(block, dtype), jnp.asarray(matrix_t, dtype),
            jnp.float32(step))
    canvas = _run(functools.partial(wk.grow_forward, **kwargs), *args)

    height = shape[1]
    chex.assert_shape(canvas, (shape[0], num_back + height + num_forward)
                      + shape[2:])
    self.assertEqual(canvas.dtype, dtype)
    np.testing.assert_array_equal(
        np.asarray(canvas[:, num_back:num_back + height], np.float64), block)
    expected = reference.grow(block, matrix_t, step, num_back, num_forward,
                              EPS, normalized)
    self.assertLess(_relative_error(canvas, expected), tolerance)

    d_block, d_matrix_t, d_step = _run(
        functools.partial(wk.grow_backward, **kwargs), canvas,
        jnp.asarray(cotangent, dtype), args[1], args[2])
    self.assertEqual(d_block.dtype, dtype)
    self.assertEqual(d_matrix_t.dtype, dtype)
    self.assertEqual(d_step.dtype, jnp.float32)
    grow = functools.partial(reference.grow, num_back=num_back,
                             num_forward=num_forward, eps=EPS,
                             normalized=normalized, xp=jnp)

    @jax.jit
    def reference_grads(block, matrix_t, step, cotangent):
      return jax.vjp(grow, block, matrix_t, step)[1](cotangent)

    with jax.enable_x64(True):
      expected_grads = [np.asarray(g) for g in reference_grads(
          jnp.asarray(block), jnp.asarray(matrix_t), jnp.float64(step),
          jnp.asarray(cotangent))]
    for name, actual, wanted in zip(("d_block", "d_matrix_t", "d_step"),
                                    (d_block, d_matrix_t, d_step),
                                    expected_grads):
      with self.subTest(name):
        self.assertLess(_relative_error(actual, wanted), tolerance)

  def test_no_walk_returns_block(self):
    block = jnp.ones((2, 3, 1, 16), jnp.float32)
    matrix_t = jnp.eye(16, dtype=jnp.float32)
    out = wk.grow_forward(block, matrix_t, jnp.float32(1.0), num_back=0,
                          num_forward=0, eps=EPS, normalized=True,
                          interpret=True)
    self.assertIs(out, block)

  def test_interpret_rejects_column_splits(self):
    block = jnp.ones((2, 1, 1, 32), jnp.float32)
    with self.assertRaisesRegex(ValueError, "column_splits=1"):
      wk.grow_forward(
          block, jnp.eye(32, dtype=jnp.float32), jnp.float32(1.0),
          num_back=1, num_forward=1, eps=EPS, normalized=True,
          interpret=True,
          config=wk.KernelConfig(16, 16, 16, column_splits=2))

  def test_is_supported(self):
    self.assertTrue(wk.is_supported(jnp.bfloat16, 1024))
    self.assertTrue(wk.is_supported(jnp.float32, 16))
    self.assertTrue(wk.is_supported(jnp.float16, 48))
    self.assertFalse(wk.is_supported(jnp.float64, 64))
    self.assertFalse(wk.is_supported(jnp.float32, 24))
    self.assertFalse(wk.is_supported(jnp.float32, wk.MAX_CHANNELS + 16))
    # One 256×256 map of C=1024 fits a launch, whatever the batch; a map of
    # 2³¹ elements does not.
    self.assertTrue(wk.is_supported(jnp.bfloat16, 1024,
                                    image_elements=256 * 256 * 1024))
    self.assertFalse(wk.is_supported(jnp.bfloat16, 512,
                                     image_elements=2**31))

  def test_launch_size(self):
    # The paper's batch of 32 (2³¹ elements) takes two launches, whether its
    # last phase is horizontal_first's vertical one [32, 256, 256, 1024] or
    # vertical_first's horizontal one [32·256, 256, 1, 1024]; half the batch
    # takes one.
    self.assertEqual(wk.tuning.launch_size(32, 256, 256, 1024), 16)
    self.assertEqual(wk.tuning.launch_size(32 * 256, 256, 1, 1024), 4096)
    self.assertEqual(wk.tuning.launch_size(16, 256, 256, 1024), 16)
    # The largest divisor of P that fits: 31 rows fit, 3·7 = 21 divides 63.
    self.assertEqual(wk.tuning.launch_size(63, 256, 256, 1024), 21)
    with self.assertRaisesRegex(ValueError,
                                "int32 limit.*implementation='xla'"):
      wk.tuning.launch_size(2, 2048, 1024, 1024)

  @parameterized.parameters(jnp.float32, jnp.bfloat16)
  def test_launches_over_p_give_the_one_launch_values(self, dtype):
    # P = 4 rows of canvas [L=5, Q=2, C=16] under a limit that fits two
    # (the padding reserve plus two rows): two launches of two.
    shape, num_back, num_forward = (4, 1, 2, 16), 2, 2
    row = 5 * 2 * 16
    limit = wk.tuning._PADDING_ROWS * 16 + 2 * row
    block, matrix_t, cotangent = _case_data(dtype, shape, num_back,
                                            num_forward, seed=3)
    kwargs = dict(num_back=num_back, num_forward=num_forward, eps=EPS,
                  normalized=True, precision=jax.lax.Precision.HIGHEST,
                  interpret=True,
                  config=wk.KernelConfig(block_walkers=16, block_columns=16,
                                         block_k=16))
    args = (jnp.asarray(block, dtype), jnp.asarray(matrix_t, dtype),
            jnp.float32(0.8))

    def forward_and_backward(block, matrix_t, step, cotangent):
      canvas = wk.grow_forward(block, matrix_t, step, **kwargs)
      return canvas, wk.grow_backward(canvas, cotangent, matrix_t, step,
                                      **kwargs)

    inputs = args + (jnp.asarray(cotangent, dtype),)
    one_launch = _run(forward_and_backward, *inputs)
    with mock.patch.object(wk.tuning, "MAX_CANVAS_ELEMENTS", limit):
      self.assertEqual(wk.tuning.launch_size(4, 5, 2, 16), 2)
      two_launches = _run(forward_and_backward, *inputs)
    tolerance = 1e-6 if dtype == jnp.float32 else 1e-2
    for name, actual, wanted in zip(
        ("canvas", "d_block", "d_matrix_t", "d_step"),
        jax.tree.leaves(two_launches), jax.tree.leaves(one_launch)):
      with self.subTest(name):
        self.assertEqual(actual.dtype, wanted.dtype)
        self.assertLess(_relative_error(actual, wanted), tolerance)

  @parameterized.product(lanes=(16, 64, 1000, 4096, 40000),
                         channels=(48, 512, 1024), backward=(False, True))
  def test_default_config_is_valid(self, lanes, channels, backward):
    cores = 132
    config = wk.default_config(lanes, channels, jnp.bfloat16,
                               backward=backward, num_cores=cores)
    self.assertEqual(channels % config.block_columns, 0)
    self.assertEqual(channels % config.block_k, 0)
    self.assertEqual((channels // config.block_columns)
                     % config.column_splits, 0)
    groups = -(-lanes // config.block_walkers)
    if config.column_splits > 1:  # Groups must be co-resident: one wave.
      self.assertLessEqual(groups * config.column_splits, cores)
    for interpreted in wk.candidate_configs(lanes, channels, jnp.bfloat16,
                                            backward=backward, num_cores=1):
      self.assertEqual(interpreted.column_splits, 1)


# --------------------------------------------------------------------------
# Lowering for CUDA (Pallas → Triton IR; Triton's PTX compile needs a GPU).


def _phase_shapes(batch, channels, side):
  """(name, P, num_back, num_forward) of vertical_first from the centre."""
  back, forward = side // 2, side - 1 - side // 2
  return (("vertical", batch, back, forward),
          ("horizontal", batch * side, back, forward))


# Benchmark shapes of the project (N, C, H = W).
BENCHMARK_SHAPES = ((32, 1024, 64), (8, 512, 256), (32, 512, 16))


def _lower(fn, *avals):
  with warnings.catch_warnings():
    # jax >= 0.11 deprecates the Pallas Triton backend at lowering time.
    warnings.filterwarnings("ignore", "The Pallas Triton backend",
                            DeprecationWarning)
    return jax.jit(fn).trace(*avals).lower(lowering_platforms=("cuda",))


class CudaLoweringTest(parameterized.TestCase):

  def _lower_phase(self, dtype, num_p, num_back, num_forward, channels,
                   config=None, backward=False, normalized=True,
                   precision=None):
    sds = jax.ShapeDtypeStruct
    kwargs = dict(num_back=num_back, num_forward=num_forward, eps=EPS,
                  normalized=normalized, precision=precision, config=config)
    length = num_back + 1 + num_forward
    matrix = sds((channels, channels), dtype)
    step = sds((), jnp.float32)
    try:
      if backward:
        canvas = sds((num_p, length, 1, channels), dtype)
        lowered = _lower(functools.partial(wk.grow_backward, **kwargs),
                         canvas, canvas, matrix, step)
      else:
        block = sds((num_p, 1, 1, channels), dtype)
        lowered = _lower(functools.partial(wk.grow_forward, **kwargs),
                         block, matrix, step)
    except RuntimeError as e:
      if "No supported GPU devices" in str(e):  # jax >= 0.11 without a GPU.
        self.skipTest("this jax lowers Triton kernels only with a GPU")
      raise
    self.assertIn("triton", lowered.as_text())

  @parameterized.parameters(
      *[(n, c, side, jnp.bfloat16) for n, c, side in BENCHMARK_SHAPES],
      (8, 512, 256, jnp.float32),
      # The paper's batch of 32: a map of 2³¹ elements, two launches.
      (32, 1024, 256, jnp.bfloat16))
  def test_default_configs_lower(self, batch, channels, side, dtype):
    for _, num_p, back, forward in _phase_shapes(batch, channels, side):
      for backward in (False, True):
        self._lower_phase(dtype, num_p, back, forward, channels,
                          backward=backward)

  def test_candidate_configs_lower(self):
    # The alternatives gpu_kernel_check times, at the largest target shape.
    batch, channels, side = BENCHMARK_SHAPES[0]
    for _, num_p, back, forward in _phase_shapes(batch, channels, side):
      for backward in (False, True):
        lanes = 2 * num_p
        for config in wk.candidate_configs(lanes, channels, jnp.bfloat16,
                                           backward=backward,
                                           num_cores=132)[1:]:
          self._lower_phase(jnp.bfloat16, num_p, back, forward, channels,
                            config=config, backward=backward)

  def test_variants_lower(self):
    # The other forward protocol, no column splits, HIGH and HIGHEST float32
    # matmuls, no normalization.
    default = wk.default_config(4096, 1024, jnp.bfloat16, num_cores=132)
    for config in (dataclasses.replace(default, two_phase=not
                                       default.two_phase),
                   dataclasses.replace(default, column_splits=1)):
      self._lower_phase(jnp.bfloat16, 2048, 32, 31, 1024, config=config)
    for precision in (jax.lax.Precision.HIGH, jax.lax.Precision.HIGHEST):
      self._lower_phase(jnp.float32, 16, 5, 5, 256, precision=precision)
      self._lower_phase(jnp.float32, 16, 5, 5, 256, precision=precision,
                        backward=True)
    self._lower_phase(jnp.bfloat16, 16, 5, 5, 256, normalized=False)
    self._lower_phase(jnp.bfloat16, 16, 5, 5, 256, normalized=False,
                      backward=True)

  def test_paths_stacked_past_two_to_the_32_bytes_address_in_64_bits(self):
    # unroll_paths is a vmap: M paths' canvases form one buffer of the
    # launch, larger than any path's (here 4 × 2³⁰ bfloat16 elements).
    # Pallas' Triton lowering then computes its offsets in int64, so no
    # path count can overflow them.
    try:
      from jax._src.pallas.triton import lowering as triton_lowering  # pylint: disable=g-import-not-at-top
      lower_module = triton_lowering.lower_jaxpr_to_triton_module
    except (ImportError, AttributeError):
      self.skipTest("this jax has no Pallas Triton lowering to inspect")
    modules = []

    def capture(*args, **kwargs):
      result = lower_module(*args, **kwargs)
      modules.append(result.module.operation.get_asm())
      return result

    paths, num_p, channels = 4, 16 * 256, 1024
    sds = jax.ShapeDtypeStruct
    grow = functools.partial(wk.grow_forward, num_back=128, num_forward=127,
                             eps=EPS, normalized=True, precision=None)
    with mock.patch.object(triton_lowering, "lower_jaxpr_to_triton_module",
                           capture):
      try:
        _lower(jax.vmap(grow, in_axes=(0, 0, None)),
               sds((paths, num_p, 1, 1, channels), jnp.bfloat16),
               sds((paths, channels, channels), jnp.bfloat16),
               sds((), jnp.float32))
      except RuntimeError as e:
        if "No supported GPU devices" in str(e):
          self.skipTest("this jax lowers Triton kernels only with a GPU")
        raise
    self.assertLen(modules, 1)  # One launch for the M paths.
    self.assertIsNotNone(re.search(r"tt\.addptr[^\n]*i64", modules[0]),
                         "no 64-bit offset in the kernel's Triton IR")


if __name__ == "__main__":
  absltest.main()
