# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""The backward kernel (the cotangent chain) and the matrix gradient."""

from __future__ import annotations

import functools
from typing import Optional, Tuple

import jax
from jax import lax
from jax.experimental import pallas as pl
import jax.numpy as jnp

from finola_jax import numerics
from finola_jax.walk_kernel import barriers
from finola_jax.walk_kernel import layout
from finola_jax.walk_kernel import tuning
from finola_jax.walk_kernel.tuning import KernelConfig

Array = jax.Array


def _backward_kernel(*refs, phase: layout.Phase, config: KernelConfig,
                     dtype, eps, normalized: bool, precision,
                     interpret: bool):
  """Runs the cotangent chain of one phase; see the package docstring."""
  (step_ref, canvas_ref, ct_ref, matrix_t_ref, _, ct_out_ref, g_ref,
   operand_ref, *rest) = refs
  if normalized:
    u_ref, zmean_ref, zm2_ref, usum_ref, uz_ref, counter_ref = rest
  else:
    (counter_ref,) = rest
  bw, bn, bk = config.block_walkers, config.block_columns, config.block_k
  splits, channels = config.column_splits, phase.channels
  num_tiles = channels // bn
  own_tiles = num_tiles // splits
  lanes_padded = g_ref.shape[0]
  prog = layout.program(phase, config)
  lanes = prog.lanes
  sigma = lanes.sign * step_ref[0]
  rows = layout.scratch_rows(prog.first_lane, 0, bw)
  dot_precision = tuning.dot_precision(dtype, precision, interpret)
  barriers_per_step = 2 if normalized else 1

  def barrier(ordinal, timed_out):
    return barriers.group_barrier(counter_ref, prog.group, ordinal * splits,
                                  timed_out, splits, interpret)

  def own(body):
    """Runs ``body(tile)`` over this program's column tiles."""
    def loop_body(t, carry):
      body(prog.first_tile + t)
      return carry
    lax.fori_loop(0, own_tiles, loop_body, 0)

  def zero_tile(tile):
    g_ref[rows, layout.columns(tile, bn)] = jnp.zeros((bw, bn), jnp.float32)

  own(zero_tile)

  def chain_step(j, timed_out):
    i = phase.num_steps - j  # Steps i = n..1; G_i → Ĝ_{i−1}.
    operand_rows = layout.scratch_rows(
        prog.first_lane, lax.rem(j, 2) * lanes_padded, bw)
    active = lanes.valid & (i <= lanes.steps)
    line = lanes.seed_line + lanes.line_step * i
    ct_rows = layout.canvas_rows(phase, lanes, line, active)
    prev_rows = layout.canvas_rows(phase, lanes, line - lanes.line_step, active)

    def gather_cotangent(tile):
      cols, index = layout.columns(tile, bn), layout.column_index(tile, bn)
      ct = layout.load_lines(ct_ref, ct_rows, index, active,
                             0.0).astype(jnp.float32)
      g = jnp.where(timed_out, jnp.nan, g_ref[rows, cols] + ct)
      g_ref[rows, cols] = g
      operand_ref[operand_rows, cols] = g.astype(dtype)
      layout.store_lines(ct_out_ref, ct_rows, index,
                         (lanes.sign[:, None] * g).astype(dtype), active)

    own(gather_cotangent)
    timed_out = barrier(barriers_per_step * j + 1, timed_out)

    def multiply(tile):
      cols = layout.columns(tile, bn)

      def k_step(k, acc):
        chunk = layout.columns(k, bk)
        return acc + lax.dot_general(
            operand_ref[operand_rows, chunk],
            layout.matrix_tile(matrix_t_ref, cols, chunk),
            (((1,), (1,)), ((), ())), precision=dot_precision,
            preferred_element_type=jnp.float32)

      u = lax.fori_loop(0, channels // bk, k_step,
                        jnp.zeros((bw, bn), jnp.float32))
      if not normalized:
        g_ref[rows, cols] = g_ref[rows, cols] + sigma[:, None] * u
        return
      z = layout.load_lines(canvas_ref, prev_rows,
                            layout.column_index(tile, bn), active, 0.0)
      z_mean, z_m2 = barriers.tile_partials(z.astype(jnp.float32))
      centred = z.astype(jnp.float32) - z_mean[:, None]
      zmean_ref[rows, tile] = z_mean
      zm2_ref[rows, tile] = z_m2
      usum_ref[rows, tile] = jnp.sum(u, axis=1)
      uz_ref[rows, tile] = jnp.sum(u * centred, axis=1)
      u_ref[rows, cols] = u

    own(multiply)
    if not normalized:
      return timed_out
    timed_out = barrier(barriers_per_step * j + 2, timed_out)
    z_means, z_m2s, u_sums, uz_sums = barriers.load_partials(
        (zmean_ref, zm2_ref, usum_ref, uz_ref), rows, num_tiles)
    mu, r, deviation = barriers.combine_stats(z_means, z_m2s, bn, channels, eps)
    mean_u = jnp.sum(u_sums, axis=1) / channels
    # Σ u (z − μ) = Σ_t [Σ_tile u (z − m_t) + (m_t − μ) Σ_tile u].
    mean_u_zhat = r * (jnp.sum(uz_sums, axis=1)
                       + jnp.sum(deviation * u_sums, axis=1)) / channels

    def pull_back(tile):
      cols = layout.columns(tile, bn)
      z = layout.load_lines(canvas_ref, prev_rows,
                            layout.column_index(tile, bn), active, 0.0)
      zhat = (z.astype(jnp.float32) - mu[:, None]) * r[:, None]
      jt_u = r[:, None] * (u_ref[rows, cols] - mean_u[:, None]
                           - zhat * mean_u_zhat[:, None])
      g_ref[rows, cols] = g_ref[rows, cols] + sigma[:, None] * jt_u

    own(pull_back)
    return timed_out

  lax.fori_loop(0, phase.num_steps, chain_step, jnp.bool_(False))


def _outer_sum(canvas: Array, g: Array, first: int, count: int, offset: int,
               chunk: int, eps: float, normalized: bool, precision) -> Array:
  """``Σ_l n(canvas[:, l + offset])ᵀ g[:, l]``, ``l ∈ [first, first+count)``.

  Runs ``chunk`` lines at a time (a ``fori_loop``), so the normalized lines
  never take more than a chunk of memory. Returns ``[C, C]`` float32.
  """
  channels = canvas.shape[-1]

  def lines_sum(start, size):
    z = lax.dynamic_slice_in_dim(canvas, start + offset, size, axis=1)
    if normalized:
      z = numerics.normalize(z.astype(jnp.float32), eps).astype(canvas.dtype)
    gl = lax.dynamic_slice_in_dim(g, start, size, axis=1)
    return jnp.einsum("plqc,plqd->cd", z, gl, precision=precision,
                      preferred_element_type=jnp.float32)

  full, rest = divmod(count, chunk)
  total = lax.fori_loop(
      0, full, lambda k, acc: acc + lines_sum(first + k * chunk, chunk),
      jnp.zeros((channels, channels), jnp.float32))
  if rest:
    total = total + lines_sum(first + full * chunk, rest)
  return total


def grow_backward(canvas: Array, cotangent: Array, matrix_t: Array,
                  step: Array, *, num_back: int, num_forward: int, eps: float,
                  normalized: bool, precision=None, interpret: bool = False,
                  config: Optional[KernelConfig] = None
                  ) -> Tuple[Array, Array, Array]:
  """Reverse mode of :func:`grow_forward`.

  With ``σ = ∓s``, ``sign = ∓1`` per direction and ``G_n = ct[line(z_n)]``::

    G_{i−1} = ct[line(z_{i−1})] + G_i + σ · J_n(z_{i−1})ᵀ (G_i @ Mᵀᵀ)
    H       = Σ_i sign · n(z_{i−1})ᵀ G_i

  where ``J_nᵀ v = r (v − mean(v) − ẑ mean(v ẑ))`` and ``z_{i−1}`` (with its
  statistics) is re-read from ``canvas``. The block lines' cotangent enters
  ``d_block`` once, not the chain.

  Args:
    canvas: ``[P, L, Q, C]`` output of :func:`grow_forward` (the only
      residual).
    cotangent: its cotangent, same shape and dtype ``D``; consumed (its
      buffer is reused for the ``G_i``).
    matrix_t, step, num_back, num_forward, eps, normalized, precision,
    interpret: as in :func:`grow_forward`.
    config: tiles of the chain kernel; :func:`default_config` if None.

  Returns:
    ``(d_block [P, h, Q, C] in D, d_matrix_t [C, C] in D, d_step float32)``.
  """
  tuning.check_arguments("canvas", canvas, matrix_t, num_back, num_forward)
  if cotangent.shape != canvas.shape or cotangent.dtype != canvas.dtype:
    raise ValueError(f"cotangent {cotangent.shape} {cotangent.dtype} must "
                     f"match canvas {canvas.shape} {canvas.dtype}.")
  num_p, length, num_q, channels = canvas.shape
  height = length - num_back - num_forward
  if height < 1:
    raise ValueError(f"canvas has {length} lines, fewer than num_back="
                     f"{num_back} + num_forward={num_forward} + 1.")
  f32 = jnp.float32
  if num_back == 0 and num_forward == 0:
    return (cotangent, jnp.zeros_like(matrix_t), jnp.zeros((), f32))
  per_launch = tuning.launch_size(num_p, length, num_q, channels)
  launch = functools.partial(
      _launch_backward, matrix_t=matrix_t, step=step, num_back=num_back,
      num_forward=num_forward, eps=eps, normalized=normalized,
      precision=precision, interpret=interpret, config=config)
  if per_launch == num_p:
    d_block, h = launch(canvas, cotangent)
  else:
    # One launch at a time; the launches' moments H add up in float32.
    def one_launch(h, canvas_and_cotangent):
      d_block, h_launch = launch(*canvas_and_cotangent)
      return h + h_launch, d_block

    by_launch = (num_p // per_launch, per_launch, length, num_q, channels)
    h, d_blocks = lax.scan(
        one_launch, jnp.zeros((channels, channels), f32),
        (canvas.reshape(by_launch), cotangent.reshape(by_launch)))
    d_block = d_blocks.reshape(num_p, height, num_q, channels)
  step32 = jnp.asarray(step, f32)
  return (d_block, (step32 * h).astype(canvas.dtype),
          jnp.sum(matrix_t.astype(f32) * h))


def _launch_backward(canvas: Array, cotangent: Array, *, matrix_t: Array,
                     step: Array, num_back: int, num_forward: int, eps: float,
                     normalized: bool, precision, interpret: bool,
                     config: Optional[KernelConfig]) -> Tuple[Array, Array]:
  """``(d_block in D, H [C, C] float32)`` of one launch's canvas rows."""
  num_p, length, num_q, channels = canvas.shape
  height = length - num_back - num_forward
  dtype = canvas.dtype
  f32 = jnp.float32
  phase = layout.phase_of((num_p, height, num_q, channels), num_back,
                          num_forward)
  config = tuning.resolve_config(config, phase, dtype, True, interpret)
  bw = config.block_walkers
  lanes_padded = pl.cdiv(phase.num_lanes, bw) * bw
  groups = lanes_padded // bw
  stat_width = pl.next_power_of_2(channels // config.block_columns)
  rows = num_p * length * num_q
  out_shape = [jax.ShapeDtypeStruct((rows, channels), dtype),
               jax.ShapeDtypeStruct((lanes_padded, channels), f32),
               jax.ShapeDtypeStruct((2 * lanes_padded, channels), dtype)]
  if normalized:
    out_shape += [jax.ShapeDtypeStruct((lanes_padded, channels), f32)]
    out_shape += [jax.ShapeDtypeStruct((lanes_padded, stat_width), f32)] * 4
  out_shape.append(jax.ShapeDtypeStruct((groups,), jnp.int32))
  kernel = functools.partial(
      _backward_kernel, phase=phase, config=config, dtype=dtype,
      eps=float(eps), normalized=normalized, precision=precision,
      interpret=interpret)
  outputs = pl.pallas_call(
      kernel, out_shape=out_shape, grid=(groups * config.column_splits,),
      input_output_aliases={2: 0, 4: len(out_shape) - 1},
      interpret=interpret, compiler_params=tuning.compiler_params(config),
      name="finola_grow_backward",
  )(jnp.reshape(step, (1,)).astype(f32), canvas.reshape(rows, channels),
    cotangent.reshape(rows, channels), matrix_t,
    jnp.zeros((groups,), jnp.int32))
  g_lines = outputs[0].reshape(canvas.shape)
  g_start = outputs[1][:phase.num_lanes].reshape(
      len(phase.directions), num_p, num_q, channels)

  # The block lines of the cotangent were not touched by the kernel.
  d_block = g_lines[:, num_back:num_back + height].astype(f32)
  for index, direction in enumerate(phase.directions):
    d_block = d_block.at[:, direction.seed_line - num_back].add(g_start[index])

  # Chunks of lines whose normalized copy takes at most 1/16 of the canvas
  # (or 8 MiB: small maps take one chunk).
  line_bytes = num_p * num_q * channels * jnp.dtype(dtype).itemsize
  chunk = max(1, max(length * line_bytes // 16, 8 << 20) // line_bytes)
  outer = functools.partial(_outer_sum, canvas, g_lines, eps=eps,
                            normalized=normalized, precision=precision)
  h = jnp.zeros((channels, channels), f32)
  if num_back:  # Line l holds −G of the step from line l + 1.
    h = h + outer(0, num_back, 1, min(chunk, num_back))
  if num_forward:  # Line l holds +G of the step from line l − 1.
    h = h + outer(num_back + height, num_forward, -1, min(chunk, num_forward))
  return d_block.astype(dtype), h
