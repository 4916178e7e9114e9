# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""The XLA backend of one growth phase: forward walks and their backward.

A *phase* ("grow") extends a block along one axis by FINOLA walks in both
directions. Both backends (this one, ``jax.lax.scan`` loops, and the Pallas
kernel in ``finola_jax.walk_kernel``) implement the same two functions on
the same canonical layout, so :mod:`finola_jax.core` can dispatch between
them:

* canvas ``[P, L, Q, C]``: ``P`` flattened leading dims, ``L`` the walk
  axis, ``Q`` positions across it, ``C`` channels. Walkers are the ``P·Q``
  vectors ``(p, q)``; each moves along ``L``. (Vertical growth of a
  ``[..., h, w, C]`` block: ``P = prod(batch)``, ``L = H``, ``Q = w``;
  horizontal growth: ``P = prod(batch)·h``, ``L = W``, ``Q = 1``. Both are
  free reshapes of ``[..., H, W, C]``.)
* :func:`grow_forward` ``(block [P, h, Q, C]) -> canvas [P, nb + h + nf,
  Q, C]``: backward walkers start from ``block[:, 0]`` and write lines
  ``nb − 1, …, 0`` (``z ← z − s·n(z) @ Mᵀ``), forward walkers start from
  ``block[:, h − 1]`` and write lines ``nb + h, …`` (``z ← z + s·n(z) @ Mᵀ``);
  the block lines are the block, bit for bit.
* :func:`grow_backward` ``(canvas, cotangent) -> (d_block, d_matrix_t,
  d_step)``: the vector-Jacobian product of :func:`grow_forward`. The canvas
  is its only residual: each state is read back from it and ``ẑ`` and its
  statistics are recomputed, so the backward stores nothing per step.

Dtypes: the canvas, block and ``matrix_t`` share the output dtype ``D``; the
walkers' states are carried in ``K = promote(D, float32)`` and cast to ``D``
when written; every matmul multiplies ``D`` operands and accumulates in
``K``. In bfloat16 the backward re-reads states rounded to bfloat16, so it
differs from autodiff of the float32 carry by bfloat16 rounding. Both
functions follow :mod:`finola_jax.numerics`' storage view: lowered for CPU,
16-bit canvases are sliced and updated as ``uint16``.

Walks in opposite directions share one loop step (one matmul) while both
have steps left; the longer one then goes on alone. A walk exactly one
step longer (a centre origin on an even side) takes that step outside the
loops (see ``_lead``).
"""

from __future__ import annotations

import functools
from typing import List, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp

from finola_jax import numerics

Array = jax.Array

BACK, FORWARD = 0, 1  # Walker directions: −s (up/left), +s (down/right).


def carry_dtype(dtype) -> jnp.dtype:
  """``K``: the dtype walkers carry their state in, for maps of ``dtype``.

  Low-precision maps (bfloat16, float16) carry their state in float32: the
  state accumulates hundreds of increments, which a 8-bit mantissa would
  lose.
  """
  return jnp.promote_types(dtype, jnp.float32)


class _Segment(NamedTuple):
  """One loop: steps ``first..last`` (1-based, inclusive) of ``directions``."""
  directions: Tuple[int, ...]
  first: int
  last: int


def _segments(num_back: int, num_forward: int) -> List[_Segment]:
  """The loops of one phase, in forward order.

  Both directions share steps ``1..min(nb, nf)``; the longer direction
  walks its remaining steps alone. A remainder of one step never reaches
  here (see :func:`_lead`).
  """
  shared = min(num_back, num_forward)
  segments = []
  if shared:
    segments.append(_Segment((BACK, FORWARD), 1, shared))
  if num_back > shared:
    segments.append(_Segment((BACK,), shared + 1, num_back))
  if num_forward > shared:
    segments.append(_Segment((FORWARD,), shared + 1, num_forward))
  return segments


def _lead(num_back: int, num_forward: int) -> Optional[int]:
  """The direction whose walk is exactly one step longer, else None.

  That step (a centre origin on an even side) is taken outside the loop,
  first in the forward and last in the backward, and its line treated as
  a line of the block: the loop then moves both walks in every step.
  Riding along in the loop instead computes the idle walkers' rows in
  every step, 1/L of the phase's FLOPs (6 % at L = 16).
  """
  if abs(num_back - num_forward) != 1:
    return None
  return BACK if num_back > num_forward else FORWARD


def _lead_joins_block(lead: int, num_back: int, num_forward: int,
                      h: int) -> Tuple[int, int, int]:
  """``(num_back, num_forward, h)`` once the lead's first line is a block line."""
  return (num_back - (lead == BACK), num_forward - (lead == FORWARD), h + 1)


def _state_line(direction: int, i, num_back: int, h: int):
  """Canvas line of state ``z_i`` of a walker (``z_0`` is a block line)."""
  if direction == BACK:
    return num_back - i
  return num_back + h - 1 + i


def _per_row(values, lanes: int, dtype) -> Array:
  """``[k·lanes, 1]``: ``values[j]`` on the rows of walker set ``j``."""
  return jnp.repeat(jnp.asarray(values, dtype), lanes)[:, None]


def _signs(directions, lanes: int, dtype) -> Array:
  """Per row: −1 for backward walkers, +1 for forward walkers."""
  return _per_row([-1.0 if d == BACK else 1.0 for d in directions], lanes,
                  dtype)


def _matmul(x: Array, matrix_t: Array, precision, carry) -> Array:
  """``x @ matrix_t`` over the last axis: ``D`` operands, ``K`` result."""
  return jax.lax.dot_general(
      x.astype(matrix_t.dtype), matrix_t, (((x.ndim - 1,), (0,)), ((), ())),
      precision=precision, preferred_element_type=carry)


def _increment(z: Array, matrix_t: Array, eps: float, normalized: bool,
               precision, carry) -> Array:
  """``n(z) @ matrix_t`` for rows ``z`` ``[R, C]`` in ``carry``."""
  if not normalized:
    return _matmul(z, matrix_t, precision, carry)
  centred, r = numerics.normalize_parts(z, eps)
  if matrix_t.dtype != carry:
    # 16-bit maps: the matmul multiplies ẑ cast to D (as the kernel does).
    return _matmul(centred * r, matrix_t, precision, carry)
  # r is one scalar per row, so it commutes with the matmul: scaling the
  # product spares a pass that writes ẑ (r rides along in the update).
  return r * _matmul(centred, matrix_t, precision, carry)


def _matmul_transposed(x: Array, matrix_t: Array, precision, carry) -> Array:
  """``x @ matrix_tᵀ`` over the last axis (no transposed copy of the matrix)."""
  return jax.lax.dot_general(
      x.astype(matrix_t.dtype), matrix_t, (((x.ndim - 1,), (1,)), ((), ())),
      precision=precision, preferred_element_type=carry)


# Inside this module a canvas with Q = 1 is [P, L, C] (a free reshape): XLA
# gives a slice of the map reshaped to [P, L, 1, C] a layout of its own and
# copies it back. Q > 1 stays [P, L, Q, C], the shape of the map itself, so
# that a cotangent map read by both paths of "average" is made once.


def _flat(canvas: Array) -> Array:
  walkers, length, positions, channels = canvas.shape
  return canvas.reshape(walkers, length, channels) if positions == 1 else canvas


def _read_lines(stored: Array, lines, dtype, carry, channels: int) -> Array:
  """``[k·P·Q, C]`` rows in ``carry``: lines ``lines[j]`` of a stored canvas."""
  return jnp.concatenate([
      numerics.from_storage(jax.lax.dynamic_index_in_dim(stored, line, axis=1,
                                                 keepdims=False),
                    dtype).astype(carry).reshape(-1, channels)
      for line in lines])


def grow_forward(block: Array, matrix_t: Array, step: Array, *,
                 num_back: int, num_forward: int, eps: float,
                 normalized: bool,
                 precision: Optional[jax.lax.Precision]) -> Array:
  """Grows ``block`` along its axis 1 by ``num_back`` + ``num_forward`` lines.

  Args:
    block: ``[P, h, Q, C]`` in the output dtype ``D``.
    matrix_t: ``[C, C]`` ``Mᵀ`` in ``D``.
    step: scalar ``s`` in ``K = carry_dtype(D)``.
    num_back, num_forward: lines to add before / after the block.
    eps: normalization epsilon.
    normalized: ``False``: ``n`` is the identity (linear walks).
    precision: of every matmul (``None``: JAX's default).

  Returns:
    ``[P, num_back + h + num_forward, Q, C]`` canvas in ``D``; the walker
    leaving line ``j`` writes ``z ± s·n(z) @ matrix_t`` to the next line
    away from the block.
  """
  return numerics.with_storage_view(
      functools.partial(_grow_forward, num_back=num_back,
                        num_forward=num_forward, eps=eps,
                        normalized=normalized, precision=precision),
      block.dtype, block, matrix_t, step)


def _grow_forward(block: Array, matrix_t: Array, step: Array, *,
                  num_back: int, num_forward: int, eps: float,
                  normalized: bool, precision, view: bool) -> Array:
  walkers, h, positions, channels = block.shape
  lanes = walkers * positions  # walkers in each direction
  dtype, carry = block.dtype, carry_dtype(block.dtype)
  # States are rows [k·lanes, C] (all walker sets of a loop stacked): one
  # shape for the statistics, the matmul and the update, so XLA makes each
  # intermediate once.
  states = {BACK: block[:, 0].astype(carry).reshape(lanes, channels),
            FORWARD: block[:, h - 1].astype(carry).reshape(lanes, channels)}
  lead = _lead(num_back, num_forward)
  if lead is not None:
    # The line joins the block before the canvas exists: no canvas copy.
    z = states[lead]
    z = z + _signs((lead,), 1, carry) * step * _increment(
        z, matrix_t, eps, normalized, precision, carry)
    states[lead] = z
    line = z.astype(dtype).reshape(walkers, 1, positions, channels)
    block = jnp.concatenate([line, block] if lead == BACK else [block, line],
                            axis=1)
    num_back, num_forward, h = _lead_joins_block(lead, num_back, num_forward,
                                                 h)
  canvas = numerics.to_storage(_flat(block), view)
  canvas = jnp.pad(canvas, ((0, 0), (num_back, num_forward)) +
                   ((0, 0),) * (canvas.ndim - 2))
  line_shape = canvas.shape[:1] + canvas.shape[2:]
  for segment in _segments(num_back, num_forward):
    signed_step = _signs(segment.directions, lanes, carry) * step

    def body(carry_in, i, segment=segment, signed_step=signed_step):
      z, canvas = carry_in
      z = z + signed_step * _increment(z, matrix_t, eps, normalized,
                                       precision, carry)
      for j, direction in enumerate(segment.directions):
        line = z[j * lanes:(j + 1) * lanes].astype(dtype).reshape(line_shape)
        canvas = jax.lax.dynamic_update_index_in_dim(
            canvas, numerics.to_storage(line, view),
            _state_line(direction, i, num_back, h), axis=1)
      return (z, canvas), None

    z = jnp.concatenate([states[d] for d in segment.directions])
    (z, canvas), _ = jax.lax.scan(
        body, (z, canvas), jnp.arange(segment.first, segment.last + 1))
    states.update((d, z[j * lanes:(j + 1) * lanes])
                  for j, d in enumerate(segment.directions))
  return numerics.from_storage(canvas, dtype).reshape(
      walkers, num_back + h + num_forward, positions, channels)


def _step_vjp(grad: Array, z_prev: Array, signs: Array, moment: Array,
              matrix_t: Array, step: Array, eps: float, normalized: bool,
              precision, carry) -> Tuple[Array, Array]:
  """One step walked back (see :func:`grow_backward` for the symbols).

  Args: ``grad`` = ``Gᵢ`` and ``z_prev`` = ``zᵢ₋₁``, the state the step
  left, rows ``[R, C]`` in ``carry``; ``signs`` ``∓1`` per row (or one
  for all); ``moment`` = ``H`` so far.

  Returns:
    ``(Gᵢ + σ·J_n(zᵢ₋₁)ᵀ (Gᵢ @ matrix_tᵀ), H + sign·n(zᵢ₋₁)ᵀ Gᵢ)``: what
    reaches ``zᵢ₋₁`` from this step on (its own cotangent line not yet
    added), and the moment.
  """
  u = _matmul_transposed(grad, matrix_t, precision, carry)
  if normalized:
    centred, r = numerics.normalize_parts(z_prev, eps)
    n = centred * r
    u = r * (u - jnp.mean(u, axis=-1, keepdims=True) -
             n * jnp.mean(u * n, axis=-1, keepdims=True))
  else:
    n = z_prev
  moment = moment + jax.lax.dot_general(
      n.astype(matrix_t.dtype), (signs * grad).astype(matrix_t.dtype),
      (((0,), (0,)), ((), ())), precision=precision,
      preferred_element_type=carry)
  return grad + step * signs * u, moment


def grow_backward(canvas: Array, cotangent: Array, matrix_t: Array,
                  step: Array, *, num_back: int, num_forward: int, eps: float,
                  normalized: bool, precision: Optional[jax.lax.Precision]
                  ) -> Tuple[Array, Array, Array]:
  """The vector-Jacobian product of :func:`grow_forward`.

  Per direction, with ``σ = ∓s`` and ``sign = ∓1`` and ``Gᵢ`` the cotangent
  of state ``zᵢ`` (``n`` steps, walked back from ``i = n``)::

      Gᵢ   = ct[line(zᵢ)] + Gᵢ₊₁ + σ·J_n(zᵢ)ᵀ (Gᵢ₊₁ @ matrix_tᵀ)   (Gₙ₊₁ = 0)
      H   += sign · n(zᵢ₋₁)ᵀ Gᵢ
      J_nᵀ v = r·(v − mean(v) − ẑ·mean(v ⊙ ẑ))    (identity if not normalized)

  with every ``zᵢ₋₁`` read from ``canvas``. Then ``d_matrix_t = s·H``,
  ``d_step = ⟨matrix_t, H⟩`` and ``d_block = ct[block lines]`` plus ``G₀``
  of the backward walkers on the first block line and of the forward walkers
  on the last.

  Args:
    canvas: ``[P, L, Q, C]`` output of :func:`grow_forward` (``D``).
    cotangent: same shape and dtype as ``canvas``.
    matrix_t, step, num_back, num_forward, eps, normalized, precision: as
      given to :func:`grow_forward`.

  Returns:
    ``(d_block [P, h, Q, C] in D, d_matrix_t [C, C] in D, d_step in K)``.
  """
  return numerics.with_storage_view(
      functools.partial(_grow_backward, num_back=num_back,
                        num_forward=num_forward, eps=eps,
                        normalized=normalized, precision=precision),
      canvas.dtype, canvas, cotangent, matrix_t, step)


def _grow_backward(canvas: Array, cotangent: Array, matrix_t: Array,
                   step: Array, *, num_back: int, num_forward: int,
                   eps: float, normalized: bool, precision, view: bool
                   ) -> Tuple[Array, Array, Array]:
  num_walkers, length, positions, channels = canvas.shape
  h = length - num_back - num_forward
  dtype, carry = canvas.dtype, carry_dtype(canvas.dtype)
  stored_canvas = numerics.to_storage(_flat(canvas), view)
  stored_cotangent = numerics.to_storage(_flat(cotangent), view)
  lanes = num_walkers * positions
  lead = _lead(num_back, num_forward)
  if lead is not None:
    num_back, num_forward, h = _lead_joins_block(lead, num_back, num_forward,
                                                 h)
  # g[d]: cotangent reaching the walkers' current state from later steps,
  # without the state's own cotangent line (added when the state is left).
  # Rows [lanes, C] per direction, stacked per loop as in grow_forward.
  zeros = jnp.zeros((lanes, channels), carry)
  g = {BACK: zeros, FORWARD: zeros}
  moment = jnp.zeros((channels, channels), carry)  # H
  segments = _segments(num_back, num_forward)
  # The last loop (the first steps) also reads the cotangent of each state
  # it leaves; after step 1 that is the block's edge line. Reading it there
  # keeps 16-bit cotangents on CPU from being read outside the loops (see
  # numerics: the storage view), which would cost a copy of the whole
  # cotangent.
  block_edges = {}
  for segment in reversed(segments):
    signs = _signs(segment.directions, lanes, carry)
    tracks_edges = segment is segments[0]

    def body(carry_in, i, segment=segment, signs=signs,
             tracks_edges=tracks_edges):
      g, moment, edges = carry_in
      dirs = segment.directions
      grad = g + _read_lines(  # Gᵢ
          stored_cotangent, [_state_line(d, i, num_back, h) for d in dirs],
          dtype, carry, channels)
      left = [_state_line(d, i - 1, num_back, h) for d in dirs]
      z_prev = _read_lines(stored_canvas, left, dtype, carry, channels)
      if tracks_edges:
        edges = _read_lines(stored_cotangent, left, dtype, carry, channels)
      g, moment = _step_vjp(grad, z_prev, signs, moment, matrix_t, step, eps,
                            normalized, precision, carry)
      return (g, moment, edges), None

    gs = jnp.concatenate([g[d] for d in segment.directions])
    edges = jnp.zeros_like(gs) if tracks_edges else None
    (gs, moment, edges), _ = jax.lax.scan(
        body, (gs, moment, edges),
        jnp.arange(segment.first, segment.last + 1), reverse=True)
    g.update((d, gs[j * lanes:(j + 1) * lanes])
             for j, d in enumerate(segment.directions))
    if tracks_edges:
      block_edges = {d: edges[j * lanes:(j + 1) * lanes]
                     for j, d in enumerate(segment.directions)}

  # d_block: the block's own cotangent lines, plus G₀ of the backward
  # walkers on the first and of the forward walkers on the last (one
  # concatenation of lines, which XLA fuses; a padded G₀ would be
  # materialized).
  def block_lines(first, last):
    lines = jax.lax.slice_in_dim(stored_cotangent, num_back + first,
                                 num_back + last, axis=1)
    return numerics.from_storage(lines, dtype).astype(carry).reshape(
        num_walkers, last - first, positions, channels)

  def edge_line(direction, index):
    """The block's edge line ``index``: its cotangent plus ``G₀``."""
    if direction in block_edges:
      own = block_edges[direction].reshape(num_walkers, 1, positions,
                                           channels)
    else:  # No walker left this edge.
      own = block_lines(index, index + 1)
    return own + g[direction].reshape(num_walkers, 1, positions, channels)

  if h == 1:
    d_block = edge_line(segments[0].directions[0], 0) + g[
        FORWARD if segments[0].directions[0] == BACK else BACK].reshape(
            num_walkers, 1, positions, channels)
  else:
    d_block = jnp.concatenate([edge_line(BACK, 0), block_lines(1, h - 1),
                               edge_line(FORWARD, h - 1)], axis=1)
  if lead is not None:
    # The lead's first step, last: its line's whole cotangent is that line
    # of d_block, and the line it left is the block's edge next to it.
    lead_line, edge = (0, 1) if lead == BACK else (h - 1, h - 2)
    z_edge = numerics.from_storage(
        jax.lax.index_in_dim(stored_canvas, num_back + edge, axis=1,
                             keepdims=False), dtype).astype(carry)
    g_edge, moment = _step_vjp(
        d_block[:, lead_line].reshape(lanes, channels),
        z_edge.reshape(lanes, channels), _signs((lead,), 1, carry), moment,
        matrix_t, step, eps, normalized, precision, carry)
    edge_total = d_block[:, edge:edge + 1] + g_edge.reshape(
        num_walkers, 1, positions, channels)
    d_block = (jnp.concatenate([edge_total, d_block[:, 2:]], axis=1)
               if lead == BACK else
               jnp.concatenate([d_block[:, :h - 2], edge_total], axis=1))
  d_matrix_t = (step * moment).astype(dtype)
  d_step = jnp.sum(matrix_t.astype(carry) * moment)
  return d_block.astype(dtype), d_matrix_t, d_step
