# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""The forward kernel: every step of one grow phase in one launch."""

from __future__ import annotations

import functools
from typing import Optional

import jax
from jax import lax
from jax.experimental import pallas as pl
import jax.numpy as jnp

from finola_jax.walk_kernel import barriers
from finola_jax.walk_kernel import layout
from finola_jax.walk_kernel import tuning
from finola_jax.walk_kernel.tuning import KernelConfig

Array = jax.Array


def _forward_kernel(*refs, phase: layout.Phase, config: KernelConfig,
                    dtype, eps, normalized: bool, precision,
                    interpret: bool):
  """Runs every step of one phase; see the package docstring."""
  step_ref, block_ref, matrix_t_ref, _, canvas_ref, state_ref, *rest = refs
  mean_ref, m2_ref = (rest.pop(0), rest.pop(0)) if normalized else (None, None)
  operand_ref = rest.pop(0) if config.two_phase else None
  (counter_ref,) = rest
  bw, bn, bk = config.block_walkers, config.block_columns, config.block_k
  splits, channels = config.column_splits, phase.channels
  num_tiles = channels // bn
  own_tiles = num_tiles // splits
  lanes_padded = state_ref.shape[0] // 2
  prog = layout.program(phase, config)
  lanes = prog.lanes
  sigma = lanes.sign * step_ref[0]

  def state_rows(parity):
    return layout.scratch_rows(prog.first_lane, parity * lanes_padded, bw)

  def store_partials(parity, tile, z):
    if normalized:
      mean, m2 = barriers.tile_partials(z)
      mean_ref[state_rows(parity), tile] = mean
      m2_ref[state_rows(parity), tile] = m2

  def barrier(ordinal, timed_out):
    return barriers.group_barrier(counter_ref, prog.group, ordinal * splits,
                                  timed_out, splits, interpret)

  # Prologue: seed states from the block, copy the block into the canvas.
  block_line = jnp.where(lanes.sign < 0, 0, phase.height - 1)
  block_rows = jnp.where(
      lanes.valid,
      (lanes.p * phase.height + block_line) * phase.num_q + lanes.q, 0)

  def seed_tile(t, carry):
    tile = prog.first_tile + t
    cols = layout.column_index(tile, bn)
    z = layout.load_lines(block_ref, block_rows, cols, lanes.valid, 0.0)
    z = z.astype(jnp.float32)
    state_ref[state_rows(0), layout.columns(tile, bn)] = z
    store_partials(0, tile, z)

    def copy_line(line, carry):
      src = jnp.where(lanes.first_dir,
                      (lanes.p * phase.height + line) * phase.num_q + lanes.q,
                      0)
      dst = layout.canvas_rows(phase, lanes, phase.num_back + line,
                               lanes.first_dir)
      layout.store_lines(
          canvas_ref, dst, cols,
          layout.load_lines(block_ref, src, cols, lanes.first_dir),
          lanes.first_dir)
      return carry

    lax.fori_loop(0, phase.height, copy_line, 0)
    return carry

  lax.fori_loop(0, own_tiles, seed_tile, 0)
  timed_out = barrier(1, jnp.bool_(False))
  dot_precision = tuning.dot_precision(dtype, precision, interpret)
  barriers_per_step = 2 if config.two_phase else 1

  def walk_step(i, timed_out):
    prev, cur = lax.rem(i - 1, 2), lax.rem(i, 2)
    if normalized:
      means, m2s = barriers.load_partials((mean_ref, m2_ref),
                                          state_rows(prev), num_tiles)
      mu, r, _ = barriers.combine_stats(means, m2s, bn, channels, eps)

    def operand(z):
      z = (z - mu[:, None]) * r[:, None] if normalized else z
      return z.astype(dtype)

    if config.two_phase:
      def normalize_tile(t, carry):
        cols = layout.columns(prog.first_tile + t, bn)
        operand_ref[state_rows(0), cols] = operand(
            state_ref[state_rows(prev), cols])
        return carry

      lax.fori_loop(0, own_tiles, normalize_tile, 0)
      timed_out = barrier(barriers_per_step * i, timed_out)

    active = lanes.valid & (i <= lanes.steps)
    out_rows = layout.canvas_rows(
        phase, lanes, lanes.seed_line + lanes.line_step * i, active)

    def advance_tile(t, carry):
      tile = prog.first_tile + t
      cols = layout.columns(tile, bn)

      def k_step(k, acc):
        chunk = layout.columns(k, bk)
        if config.two_phase:
          a = operand_ref[state_rows(0), chunk]
        else:
          a = operand(state_ref[state_rows(prev), chunk])
        b = layout.matrix_tile(matrix_t_ref, chunk, cols)
        return acc + lax.dot(a, b, precision=dot_precision,
                             preferred_element_type=jnp.float32)

      acc = lax.fori_loop(0, channels // bk, k_step,
                          jnp.zeros((bw, bn), jnp.float32))
      z = state_ref[state_rows(prev), cols] + sigma[:, None] * acc
      z = jnp.where(timed_out, jnp.nan, z)
      state_ref[state_rows(cur), cols] = z
      layout.store_lines(canvas_ref, out_rows,
                         layout.column_index(tile, bn), z.astype(dtype),
                         active)
      store_partials(cur, tile, z)
      return carry

    lax.fori_loop(0, own_tiles, advance_tile, 0)
    return barrier(barriers_per_step * i + 1, timed_out)

  lax.fori_loop(1, phase.num_steps + 1, walk_step, timed_out)


def grow_forward(block: Array, matrix_t: Array, step: Array, *,
                 num_back: int, num_forward: int, eps: float,
                 normalized: bool, precision=None, interpret: bool = False,
                 config: Optional[KernelConfig] = None) -> Array:
  """Extends ``block`` along its walk axis by ``num_back`` + ``num_forward``.

  Backward walkers start at ``z_0 = block[:, 0]`` and take
  ``z_i = z_{i−1} − s · n(z_{i−1}) @ matrix_t`` onto line ``num_back − i``;
  forward walkers start at ``block[:, h−1]`` and take ``+s`` steps onto line
  ``num_back + h − 1 + i``.

  Args:
    block: ``[P, h, Q, C]`` in ``D`` (float32, bfloat16 or float16).
    matrix_t: ``[C, C]`` = ``Mᵀ`` in ``D``.
    step: scalar ``s`` (float32).
    num_back, num_forward: lines to add before and after the block.
    eps: normalization epsilon (inside the square root).
    normalized: ``False`` steps with ``z`` instead of ``n(z)``.
    precision: ``None`` or a ``lax.Precision`` for float32 maps.
    interpret: run the Pallas interpreter (any backend; for tests).
    config: tiles and launch parameters; :func:`default_config` if None.

  Returns:
    ``[P, num_back + h + num_forward, Q, C]`` canvas in ``D`` with
    ``canvas[:, num_back:num_back + h] == block``.
  """
  tuning.check_arguments("block", block, matrix_t, num_back, num_forward)
  if num_back == 0 and num_forward == 0:
    return block
  num_p, height, num_q, channels = block.shape
  length = num_back + height + num_forward
  per_launch = tuning.launch_size(num_p, length, num_q, channels)
  launch = functools.partial(
      _launch_forward, matrix_t=matrix_t, step=step, num_back=num_back,
      num_forward=num_forward, eps=eps, normalized=normalized,
      precision=precision, interpret=interpret, config=config)
  if per_launch == num_p:
    return launch(block)
  # One launch at a time, each writing its rows of the stacked canvas.
  canvases = lax.map(launch, block.reshape(num_p // per_launch, per_launch,
                                           height, num_q, channels))
  return canvases.reshape(num_p, length, num_q, channels)


def _launch_forward(block: Array, *, matrix_t: Array, step: Array,
                    num_back: int, num_forward: int, eps: float,
                    normalized: bool, precision, interpret: bool,
                    config: Optional[KernelConfig]) -> Array:
  """:func:`grow_forward` of a block small enough for one launch."""
  dtype = block.dtype
  phase = layout.phase_of(block.shape, num_back, num_forward)
  config = tuning.resolve_config(config, phase, dtype, False, interpret)
  bw = config.block_walkers
  lanes_padded = pl.cdiv(phase.num_lanes, bw) * bw
  groups = lanes_padded // bw
  channels = phase.channels
  stat_width = pl.next_power_of_2(channels // config.block_columns)
  rows = phase.num_p * phase.length * phase.num_q
  f32 = jnp.float32
  out_shape = [jax.ShapeDtypeStruct((rows, channels), dtype),
               jax.ShapeDtypeStruct((2 * lanes_padded, channels), f32)]
  if normalized:
    out_shape += [jax.ShapeDtypeStruct((2 * lanes_padded, stat_width), f32)] * 2
  if config.two_phase:
    out_shape.append(jax.ShapeDtypeStruct((lanes_padded, channels), dtype))
  out_shape.append(jax.ShapeDtypeStruct((groups,), jnp.int32))
  kernel = functools.partial(
      _forward_kernel, phase=phase, config=config, dtype=dtype, eps=float(eps),
      normalized=normalized, precision=precision, interpret=interpret)
  outputs = pl.pallas_call(
      kernel, out_shape=out_shape, grid=(groups * config.column_splits,),
      input_output_aliases={3: len(out_shape) - 1}, interpret=interpret,
      compiler_params=tuning.compiler_params(config),
      name="finola_grow_forward",
  )(jnp.reshape(step, (1,)).astype(f32),
    block.reshape(phase.num_p * phase.height * phase.num_q, channels),
    matrix_t, jnp.zeros((groups,), jnp.int32))
  return outputs[0].reshape(phase.num_p, phase.length, phase.num_q, channels)
