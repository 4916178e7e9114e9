# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
r"""Fused FINOLA walks: Pallas kernels for NVIDIA GPUs (Triton backend).

One *grow* phase extends a block along one axis by walks in both directions.
In the canonical layout the canvas is ``[P, L, Q, C]``: ``P`` flattened
leading dims, ``L`` the walk axis, ``Q`` positions across it, ``C`` channels;
the ``P·Q`` vectors ``(p, q)`` walk along ``L``. With ``σ = −s`` (backward
walkers, from the block's first line) or ``σ = +s`` (forward walkers, from
its last line)::

    z_i = z_{i−1} + σ · n(z_{i−1}) @ Mᵀ,   n(z) = (z − mean) · rsqrt(var + eps)

and ``z_i`` is written ``i`` lines away from the block. :func:`grow_forward`
runs every step of a phase in one kernel launch; :func:`grow_backward` runs
the reverse-mode chain in one launch and forms the matrix gradient in XLA.

Design
------
*Lanes.* A lane is one walker of one direction; lanes are numbered
``direction · P·Q + p·Q + q`` and cut into blocks of ``block_walkers`` (rows
of a tile). Both directions share programs; a lane whose walk is shorter than
the longest one computes but stops writing.

*Column splits.* ``C`` is cut into tiles of ``block_columns``. A walker block
is served by ``column_splits`` programs (a *group*), each owning
``C / (block_columns · column_splits)`` column tiles, so that a phase with few
walkers still spreads its matrix reads over many SMs. A step needs ``n(z)``
over all ``C`` columns, so the programs of a group meet at a barrier each step:
a CTA barrier, an ``atomic_add`` on the group's counter (acquire-release, GPU
scope), a spin on the counter and a CTA barrier. The spin is bounded: a
program that waits too long (its group was not co-resident) poisons its
outputs with NaN instead of hanging. With one split the barrier is only a CTA
barrier. The default configuration keeps every group inside one wave of
programs (``groups · splits ≤ SMs``) whenever it splits.

*Forward step* (one barrier; per program, per own tile ``t``)::

    μ, r  ← per-tile (mean, M2) partials of z_{i−1}          [bw, C/bn]
    acc   ← Σ_k cast_D((z_{i−1}[:, k] − μ) · r) @ Mᵀ[k, t]     K-loop, f32 acc
    z_i[:, t] = z_{i−1}[:, t] + σ · acc  → f32 state (other parity), canvas (D)
    partials of z_i[:, t] (tile mean and M2, combined by Chan's formula)
    barrier

The f32 states live in a double-buffered global scratch ``[2, lanes, C]``
(L2-resident at these sizes), so the K-loop reads ``4·bw·C`` bytes of state
and ``2·C·bn`` bytes of ``Mᵀ`` per tile and step (bf16), and writes
``bw·bn`` states and canvas values. With ``two_phase`` each program first
writes ``cast_D(n(z))`` of its own tiles to a scratch and the K-loop reads
that (half the bytes for 16-bit maps, one more barrier per step).

*Backward step* ``i = n..1`` (two barriers; ``Ĝ_n = 0``)::

    W: G_i[:, t] = ct[line(z_i)][:, t] + Ĝ_i[:, t]; write cast_D(G_i) to the
       operand scratch and sign·G_i over the consumed cotangent line.
       barrier
    X: u[:, t] = Σ_k cast_D(G_i[:, k]) @ M[k, t]; partials of z_{i−1}[:, t]
       (re-read from the canvas) and of u, u·z.
       barrier
    Y: Ĝ_{i−1}[:, t] = G_i[:, t] + σ · r (u − mean(u) − ẑ · mean(u ẑ)).

Per tile and step the K-loop reads ``2·bw·C`` bytes of ``G`` and ``2·C·bn``
of ``Mᵀ`` (bf16); ``Ĝ_0`` comes out per lane and enters ``d_block``.

The ``[C, C]`` matrix gradient does not fit on chip, so it is formed after
the kernel in XLA: ``H = Σ sign · n(z_{i−1})ᵀ G_i`` over the written lines,
in chunks of lines (no map-sized temporary). ``d Mᵀ = s·H`` and
``d s = ⟨Mᵀ, H⟩``.

*Precision.* States and gradients are carried in float32 and cast to the map
dtype ``D`` only when written; matmuls take ``D`` operands (``n(z)`` or ``G``
cast to ``D``) with float32 accumulation. For float32 maps ``precision``
picks the MMA: ``None``/``DEFAULT`` → TF32, ``HIGH`` → TF32×3 (Triton's
``tf32x3``, near-float32), ``HIGHEST`` → IEEE float32.

*Scratch.* Forward: ``2·lanes·C`` float32 states (+ ``lanes·C`` in ``D``
two-phase); backward: ``2·lanes·C`` float32 and ``2·lanes·C`` in ``D``; the
matrix gradient adds chunks of at most 1/16 of the canvas. For a
horizontal phase (``lanes = 2·N·H``) that is ``8/W`` (forward, ``+2/W``
two-phase) and ``12/W`` (backward) of a bf16 map's bytes.

*Scope.* NVIDIA GPUs with the Pallas Triton backend (``interpret=True`` runs
anywhere, for tests). TPUs are out of scope: callers fall back to XLA there.
jax ≥ 0.11 deprecates the Pallas Triton backend and warns
(``DeprecationWarning``) whenever such a kernel is lowered. Canvas offsets
are int32, so a canvas must hold fewer than 2³¹ elements (:func:`is_supported`
checks it when given ``canvas_elements``).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple, Optional, Tuple

import jax
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu
import jax.numpy as jnp

Array = jax.Array

SUPPORTED_DTYPES = (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16),
                    jnp.dtype(jnp.float16))
CHANNEL_MULTIPLE = 16  # The smallest tile edge Triton's dot accepts.
MAX_CHANNELS = 4096
# Offsets into the canvas are int32 (with room for a row past the end).
MAX_CANVAS_ELEMENTS = 2**31 - 2 * MAX_CHANNELS

# Polls of a group counter before a program gives up waiting (about a second
# on an H100). Only a group that is not co-resident can wait that long.
_SPIN_LIMIT = 1 << 20
_DEFAULT_NUM_CORES = 132  # H100 SXM.


def is_supported(dtype, channels: int,
                 canvas_elements: Optional[int] = None) -> bool:
  """Whether the kernels handle maps of ``dtype`` with ``channels`` channels.

  Args:
    dtype: the map dtype ``D``.
    channels: ``C``.
    canvas_elements: optionally, ``P·L·Q·C`` of the largest canvas of the
      call (offsets are int32).

  Returns:
    True for float32, bfloat16 or float16 with ``C`` a multiple of 16 up to
    :data:`MAX_CHANNELS` (and a canvas under 2³¹ elements when given).
  """
  if jnp.dtype(dtype) not in SUPPORTED_DTYPES:
    return False
  if channels % CHANNEL_MULTIPLE or not 0 < channels <= MAX_CHANNELS:
    return False
  return canvas_elements is None or canvas_elements <= MAX_CANVAS_ELEMENTS


# --------------------------------------------------------------------------
# Configuration.


@dataclasses.dataclass(frozen=True)
class KernelConfig:
  """Tile sizes and launch parameters of one kernel.

  Attributes:
    block_walkers: lanes per program (tile rows ``bw``), a power of two ≥ 16.
    block_columns: columns per tile ``bn``, a power of two dividing ``C``.
    block_k: K-loop chunk ``bk``, a power of two dividing ``C``.
    column_splits: programs per walker block; divides ``C / bn``.
    num_warps: warps per program.
    num_stages: software-pipelining depth of the K-loop.
    two_phase: forward only; exchange ``cast_D(n(z))`` (two barriers per
      step) instead of float32 states (one barrier).
  """
  block_walkers: int
  block_columns: int
  block_k: int
  column_splits: int = 1
  num_warps: int = 4
  num_stages: int = 3
  two_phase: bool = False


def _num_cores() -> int:
  """Streaming multiprocessors of the default device (H100 if unknown)."""
  device = jax.devices()[0]
  if device.platform != "gpu":
    return _DEFAULT_NUM_CORES
  return int(getattr(device, "core_count", _DEFAULT_NUM_CORES))


# Tiles above this many elements would hold a float32 tensor in more than
# 64 registers per thread (8 warps); epilogues keep three such tensors live.
_MAX_TILE_AREA = 128 * 128


def default_config(num_lanes: int, channels: int, dtype, *,
                   backward: bool = False,
                   num_cores: Optional[int] = None) -> KernelConfig:
  """Picks tiles for ``num_lanes`` walkers of ``channels`` channels.

  A small cost model of one step on an H100: every program streams, per own
  tile, its operand rows (``bw × C`` float32 states, or ``D`` values for the
  two-phase forward and the backward) and its ``C × bn`` slice of the matrix
  from L2 at ~80 GB/s per SM, and multiplies at ~4 TFLOP/s per SM (16-bit;
  2 for float32; half that below 64 rows), plus ~1 µs per barrier. Splits
  are only used while all programs fit in one wave (co-resident groups) and
  tiles hold at most 128 × 128 elements. The cheapest
  ``waves · (max(bytes / bandwidth, flops / rate) + barriers)`` wins; ties go
  to the larger tile.

  Args:
    num_lanes: walkers of both directions, ``directions · P · Q``.
    channels: ``C`` (see :func:`is_supported`).
    dtype: the map dtype ``D``.
    backward: configure :func:`grow_backward` (``D`` operands, two barriers).
    num_cores: SMs; the default device's (132 if unknown). 1 disables
      splits (interpret mode).

  Returns:
    The chosen :class:`KernelConfig`.
  """
  cores = num_cores or _num_cores()
  itemsize = jnp.dtype(dtype).itemsize
  rate = 4e12 if itemsize == 2 else 2e12
  phases = (False, True) if not backward and itemsize == 2 else (False,)
  best_key, best = None, None
  for bw in (16, 32, 64, 128):
    if bw > max(16, pl.next_power_of_2(num_lanes)):
      break
    groups = pl.cdiv(num_lanes, bw)
    for bn in (16, 32, 64, 128, 256):
      if channels % bn or bw * bn > _MAX_TILE_AREA:
        continue
      tiles = channels // bn
      splits = max(s for s in range(1, tiles + 1)
                   if tiles % s == 0 and (s == 1 or groups * s <= cores))
      own_tiles = tiles // splits
      waves = pl.cdiv(groups * splits, cores)
      flops = 2 * bw * bn * channels * own_tiles
      efficiency = 1.0 if bw >= 64 else 0.5
      for two_phase in phases:
        operand_bytes = itemsize if backward or two_phase else 4
        data = own_tiles * channels * (operand_bytes * bw + itemsize * bn)
        if two_phase:  # Normalizing own tiles: read states, write operands.
          data += own_tiles * bw * bn * (4 + itemsize)
        barriers = 2 if backward or two_phase else 1
        seconds = waves * (max(data / 80e9, flops / (rate * efficiency))
                           + barriers * 1e-6)
        key = (seconds, -bw * bn, two_phase)
        if best_key is None or key < best_key:
          best_key, best = key, (bw, bn, splits, two_phase)
  bw, bn, splits, two_phase = best
  return _tiles(channels, dtype, backward, bw, bn, splits, two_phase)


def _tiles(channels: int, dtype, backward: bool, bw: int, bn: int,
           splits: int, two_phase: bool = False) -> KernelConfig:
  """A config of ``bw × bn`` tiles with its K chunk and warp count.

  The K chunk is the largest whose two pipelined operand tiles take at most
  48 KiB (three stages stay well inside an H100's 227 KiB of shared memory).
  """
  itemsize = jnp.dtype(dtype).itemsize
  a_bytes = itemsize if backward or two_phase else 4
  bk = max(k for k in (16, 32, 64, 128)
           if channels % k == 0
           and (k == 16 or k * (bw * a_bytes + bn * itemsize) <= 48 * 1024))
  return KernelConfig(block_walkers=bw, block_columns=bn, block_k=bk,
                      column_splits=splits,
                      num_warps=8 if bw * bn >= 128 * 128 else 4,
                      num_stages=3, two_phase=two_phase)


def candidate_configs(num_lanes: int, channels: int, dtype, *,
                      backward: bool = False,
                      num_cores: Optional[int] = None) -> Tuple[KernelConfig,
                                                                ...]:
  """The default config and up to three alternatives worth timing.

  The cost model of :func:`default_config` ignores register pressure,
  occupancy and barrier latency; the alternatives probe exactly those, in
  this order of preference: the other forward protocol (16-bit maps),
  half-width tiles with twice the programs (two per SM or a second wave),
  double-width tiles (above the default's register cap), no column splits
  (CTA barriers only) and the other warp count.

  Args:
    num_lanes, channels, dtype, backward, num_cores: as in
      :func:`default_config`.

  Returns:
    Distinct configs, the default first.
  """
  cores = num_cores or _num_cores()
  base = default_config(num_lanes, channels, dtype, backward=backward,
                        num_cores=cores)
  bw, bn, splits = base.block_walkers, base.block_columns, base.column_splits
  two_phase = base.two_phase
  groups = pl.cdiv(num_lanes, bw)
  found = [base]

  def add(width, splits, two_phase=two_phase):
    add_config(_tiles(channels, dtype, backward, bw, width, splits,
                      two_phase))

  def add_config(config):
    if config not in found:
      found.append(config)

  if not backward and jnp.dtype(dtype).itemsize == 2:
    add(bn, splits, not two_phase)
  if bn >= 32:
    add(bn // 2, splits * 2 if 1 < cores and groups * splits < cores
        else splits)
  if bn <= 128 and channels % (2 * bn) == 0:
    wide_tiles = channels // (2 * bn)
    add(2 * bn, splits if wide_tiles % splits == 0 else splits // 2)
  if splits > 1:
    add(bn, 1)
  add_config(dataclasses.replace(base, num_warps=12 - base.num_warps))
  return tuple(found[:4])


def _check_config(config: KernelConfig, channels: int, interpret: bool):
  def power_of_two(v):
    return v >= 1 and v & (v - 1) == 0

  bw, bn, bk = config.block_walkers, config.block_columns, config.block_k
  if not (power_of_two(bw) and bw >= 16):
    raise ValueError(f"block_walkers must be a power of two >= 16, got {bw}.")
  for name, value in (("block_columns", bn), ("block_k", bk)):
    if not (power_of_two(value) and value >= 16 and channels % value == 0):
      raise ValueError(f"{name} must be a power of two >= 16 dividing "
                       f"C={channels}, got {value}.")
  if (channels // bn) % config.column_splits:
    raise ValueError(f"column_splits={config.column_splits} must divide the "
                     f"{channels // bn} column tiles.")
  if interpret and config.column_splits != 1:
    # Interpret mode runs programs one after another: a group never meets.
    raise ValueError("interpret mode needs column_splits=1.")


# --------------------------------------------------------------------------
# Static description of a phase.


class _Direction(NamedTuple):
  sign: float       # −1: backward walkers, +1: forward walkers.
  steps: int        # Steps of this direction's walk.
  seed_line: int    # Canvas line of z_0; z_i is at seed_line + line_step·i.
  line_step: int


@dataclasses.dataclass(frozen=True)
class _Phase:
  """Shapes of one grow phase (all static)."""
  num_p: int
  height: int       # h, block lines.
  num_q: int
  channels: int
  num_back: int
  num_forward: int

  @property
  def length(self) -> int:
    return self.num_back + self.height + self.num_forward

  @property
  def directions(self) -> Tuple[_Direction, ...]:
    dirs = []
    if self.num_back:
      dirs.append(_Direction(-1.0, self.num_back, self.num_back, -1))
    if self.num_forward:
      dirs.append(_Direction(1.0, self.num_forward,
                             self.num_back + self.height - 1, 1))
    return tuple(dirs)

  @property
  def walkers(self) -> int:
    return self.num_p * self.num_q

  @property
  def num_lanes(self) -> int:
    return len(self.directions) * self.walkers

  @property
  def num_steps(self) -> int:
    return max(d.steps for d in self.directions)


class _Lanes(NamedTuple):
  """Per-lane ``[bw]`` vectors of one walker block (in-kernel values)."""
  valid: Array      # bool: a real lane (not padding).
  first_dir: Array  # bool: lane of the first direction (copies the block).
  sign: Array       # f32
  steps: Array      # i32
  seed_line: Array  # i32
  line_step: Array  # i32
  p: Array          # i32
  q: Array          # i32


def _lanes(phase: _Phase, first_lane, bw: int) -> _Lanes:
  """Lanes ``first_lane + [0, bw)``: lane ``d·P·Q + p·Q + q`` is walker
  ``(p, q)`` of direction ``d`` (in ``phase.directions`` order)."""
  lane = first_lane + lax.iota(jnp.int32, bw)
  valid = lane < phase.num_lanes
  lane = jnp.where(valid, lane, 0)
  direction = lax.div(lane, jnp.int32(phase.walkers))
  walker = lane - direction * phase.walkers
  first_dir = direction == 0

  def per_direction(field, dtype):
    values = [jnp.full((bw,), getattr(d, field), dtype)
              for d in phase.directions]
    return values[0] if len(values) == 1 else jnp.where(first_dir, *values)

  return _Lanes(
      valid=valid, first_dir=first_dir & valid,
      sign=per_direction("sign", jnp.float32),
      steps=jnp.where(valid, per_direction("steps", jnp.int32), 0),
      seed_line=per_direction("seed_line", jnp.int32),
      line_step=per_direction("line_step", jnp.int32),
      p=lax.div(walker, jnp.int32(phase.num_q)),
      q=lax.rem(walker, jnp.int32(phase.num_q)))


def _canvas_rows(phase: _Phase, lanes: _Lanes, line, mask) -> Array:
  """Rows ``(p·L + line)·Q + q`` of the flattened ``[P·L·Q, C]`` canvas.

  Masked-off lanes get the row one past the end: the GPU never touches it,
  and the interpreter (which scatters masked stores as read-modify-write)
  drops it instead of racing a real lane on a shared dummy row.
  """
  rows = (lanes.p * phase.length + line) * phase.num_q + lanes.q
  return jnp.where(mask, rows, phase.num_p * phase.length * phase.num_q)


def _lines(canvas_ref, rows, cols, mask, other=None):
  """Loads ``canvas[rows, cols]`` (``[bw, bn]``) where ``mask`` (per row)."""
  shape = (rows.shape[0], cols.shape[0])
  return plgpu.load(canvas_ref.at[rows[:, None], cols[None, :]],
                    mask=jnp.broadcast_to(mask[:, None], shape), other=other)


def _store_lines(canvas_ref, rows, cols, values, mask):
  # The map streams through L2 once: keep it from evicting matrix and states.
  plgpu.store(canvas_ref.at[rows[:, None], cols[None, :]], values,
              mask=jnp.broadcast_to(mask[:, None], values.shape),
              eviction_policy="evict_first")


def _matrix_tile(matrix_t_ref, rows, cols):
  """A tile of ``Mᵀ``, re-read by every program every step: kept in L2."""
  return plgpu.load(matrix_t_ref.at[rows, cols], eviction_policy="evict_last")


def _dot_precision(dtype, precision, interpret: bool):
  """The kernel's dot precision for ``D`` operands (see module docstring)."""
  if jnp.dtype(dtype) != jnp.float32 or precision is None:
    return None
  precision = lax.Precision(precision)
  if precision == lax.Precision.DEFAULT:
    return None
  if precision == lax.Precision.HIGH and not interpret:
    return lax.DotAlgorithmPreset.TF32_TF32_F32_X3
  # HIGHEST (and HIGH on the CPU interpreter, which multiplies in float32).
  return lax.Precision.HIGHEST


# --------------------------------------------------------------------------
# In-kernel pieces shared by both kernels.


class _Program(NamedTuple):
  """Where one program sits: its group, its lanes, its column tiles."""
  group: Array
  first_lane: Array
  first_tile: Array
  lanes: _Lanes


def _program(phase: _Phase, config: KernelConfig) -> _Program:
  splits = config.column_splits
  pid = pl.program_id(0)
  group = lax.div(pid, jnp.int32(splits))
  first_lane = group * config.block_walkers
  own_tiles = phase.channels // config.block_columns // splits
  first_tile = (pid - group * splits) * own_tiles
  return _Program(group, first_lane, first_tile,
                  _lanes(phase, first_lane, config.block_walkers))


def _rows(first_lane, offset, bw: int):
  """``pl.ds`` of ``bw`` scratch rows starting at ``offset + first_lane``."""
  return pl.ds(pl.multiple_of(offset + first_lane, bw), bw)


def _cols(tile, width: int):
  return pl.ds(pl.multiple_of(tile * width, width), width)


def _col_index(tile, width: int):
  return tile * width + lax.iota(jnp.int32, width)


def _group_barrier(counter_ref, group, target, timed_out, splits: int,
                   interpret: bool):
  """Waits until the group counter reaches ``target``; returns ``timed_out``.

  Every program of the group adds 1 per barrier, so the ``b``-th barrier
  waits for ``b · splits``. The CTA barriers before and after order this
  program's global writes before its release and its later reads after the
  acquire (the atomics are acquire-release at GPU scope). A program that has
  timed out once no longer waits.
  """
  if splits == 1:
    if not interpret:  # The interpreter runs one thread: nothing to order.
      plgpu.debug_barrier()
    return timed_out
  plgpu.debug_barrier()
  plgpu.atomic_add(counter_ref, (group,), jnp.int32(1))

  def waiting(carry):
    count, polls = carry
    return (count < target) & (polls < _SPIN_LIMIT)

  def poll(carry):
    _, polls = carry
    return plgpu.atomic_add(counter_ref, (group,), jnp.int32(0)), polls + 1

  start = jnp.where(timed_out, target, jnp.int32(0))
  count, _ = lax.while_loop(waiting, poll, (start, jnp.int32(0)))
  plgpu.debug_barrier()
  return timed_out | (count < target)


def _tile_partials(z):
  """Mean and sum of squared deviations of each row of a ``[bw, bn]`` tile."""
  mean = jnp.mean(z, axis=1)
  return mean, jnp.sum(jnp.square(z - mean[:, None]), axis=1)


def _load_partials(refs, rows, num_tiles: int):
  """Loads ``[bw, num_tiles]`` partials (padded columns read as zero)."""
  width = refs[0].shape[1]
  if width == num_tiles:
    return [ref[rows, :] for ref in refs]
  mask = lax.iota(jnp.int32, width) < num_tiles
  out = []
  for ref in refs:
    values = ref[rows, :]
    out.append(jnp.where(mask[None, :], values, 0.0))
  return out


def _combine_stats(means, m2s, tile_width: int, channels: int, eps: float):
  """Chan's combination of per-tile (mean, M2) into (μ, r, deviations).

  Returns ``μ``, ``r = rsqrt(var + eps)`` (population variance over
  ``channels``) and ``means − μ`` (zero on padded tiles), all float32.
  """
  num_tiles = channels // tile_width
  mu = jnp.sum(means, axis=1) / num_tiles
  deviation = means - mu[:, None]
  if means.shape[1] != num_tiles:
    deviation = jnp.where(
        (lax.iota(jnp.int32, means.shape[1]) < num_tiles)[None, :],
        deviation, 0.0)
  m2 = jnp.sum(m2s, axis=1) + tile_width * jnp.sum(jnp.square(deviation),
                                                   axis=1)
  return mu, lax.rsqrt(m2 / channels + eps), deviation


# --------------------------------------------------------------------------
# Forward kernel.


def _forward_kernel(*refs, phase: _Phase, config: KernelConfig, dtype, eps,
                    normalized: bool, precision, interpret: bool):
  """Runs every step of one phase; see the module docstring."""
  step_ref, block_ref, matrix_t_ref, _, canvas_ref, state_ref, *rest = refs
  mean_ref, m2_ref = (rest.pop(0), rest.pop(0)) if normalized else (None, None)
  operand_ref = rest.pop(0) if config.two_phase else None
  (counter_ref,) = rest
  bw, bn, bk = config.block_walkers, config.block_columns, config.block_k
  splits, channels = config.column_splits, phase.channels
  num_tiles = channels // bn
  own_tiles = num_tiles // splits
  lanes_padded = state_ref.shape[0] // 2
  prog = _program(phase, config)
  lanes = prog.lanes
  sigma = lanes.sign * step_ref[0]

  def state_rows(parity):
    return _rows(prog.first_lane, parity * lanes_padded, bw)

  def store_partials(parity, tile, z):
    if normalized:
      mean, m2 = _tile_partials(z)
      mean_ref[state_rows(parity), tile] = mean
      m2_ref[state_rows(parity), tile] = m2

  def barrier(ordinal, timed_out):
    return _group_barrier(counter_ref, prog.group, ordinal * splits,
                          timed_out, splits, interpret)

  # Prologue: seed states from the block, copy the block into the canvas.
  block_line = jnp.where(lanes.sign < 0, 0, phase.height - 1)
  block_rows = jnp.where(
      lanes.valid,
      (lanes.p * phase.height + block_line) * phase.num_q + lanes.q, 0)

  def seed_tile(t, carry):
    tile = prog.first_tile + t
    cols = _col_index(tile, bn)
    z = _lines(block_ref, block_rows, cols, lanes.valid, 0.0)
    z = z.astype(jnp.float32)
    state_ref[state_rows(0), _cols(tile, bn)] = z
    store_partials(0, tile, z)

    def copy_line(line, carry):
      src = jnp.where(lanes.first_dir,
                      (lanes.p * phase.height + line) * phase.num_q + lanes.q,
                      0)
      dst = _canvas_rows(phase, lanes, phase.num_back + line, lanes.first_dir)
      _store_lines(canvas_ref, dst, cols,
                   _lines(block_ref, src, cols, lanes.first_dir),
                   lanes.first_dir)
      return carry

    lax.fori_loop(0, phase.height, copy_line, 0)
    return carry

  lax.fori_loop(0, own_tiles, seed_tile, 0)
  timed_out = barrier(1, jnp.bool_(False))
  dot_precision = _dot_precision(dtype, precision, interpret)
  barriers_per_step = 2 if config.two_phase else 1

  def walk_step(i, timed_out):
    prev, cur = lax.rem(i - 1, 2), lax.rem(i, 2)
    if normalized:
      means, m2s = _load_partials((mean_ref, m2_ref), state_rows(prev),
                                  num_tiles)
      mu, r, _ = _combine_stats(means, m2s, bn, channels, eps)

    def operand(z):
      z = (z - mu[:, None]) * r[:, None] if normalized else z
      return z.astype(dtype)

    if config.two_phase:
      def normalize_tile(t, carry):
        cols = _cols(prog.first_tile + t, bn)
        operand_ref[state_rows(0), cols] = operand(
            state_ref[state_rows(prev), cols])
        return carry

      lax.fori_loop(0, own_tiles, normalize_tile, 0)
      timed_out = barrier(barriers_per_step * i, timed_out)

    active = lanes.valid & (i <= lanes.steps)
    out_rows = _canvas_rows(phase, lanes,
                            lanes.seed_line + lanes.line_step * i, active)

    def advance_tile(t, carry):
      tile = prog.first_tile + t
      cols = _cols(tile, bn)

      def k_step(k, acc):
        chunk = _cols(k, bk)
        if config.two_phase:
          a = operand_ref[state_rows(0), chunk]
        else:
          a = operand(state_ref[state_rows(prev), chunk])
        b = _matrix_tile(matrix_t_ref, chunk, cols)
        return acc + lax.dot(a, b, precision=dot_precision,
                             preferred_element_type=jnp.float32)

      acc = lax.fori_loop(0, channels // bk, k_step,
                          jnp.zeros((bw, bn), jnp.float32))
      z = state_ref[state_rows(prev), cols] + sigma[:, None] * acc
      z = jnp.where(timed_out, jnp.nan, z)
      state_ref[state_rows(cur), cols] = z
      _store_lines(canvas_ref, out_rows, _col_index(tile, bn),
                   z.astype(dtype), active)
      store_partials(cur, tile, z)
      return carry

    lax.fori_loop(0, own_tiles, advance_tile, 0)
    return barrier(barriers_per_step * i + 1, timed_out)

  lax.fori_loop(1, phase.num_steps + 1, walk_step, timed_out)


def _phase_of(shape, num_back: int, num_forward: int) -> _Phase:
  num_p, height, num_q, channels = shape
  return _Phase(num_p=num_p, height=height, num_q=num_q, channels=channels,
                num_back=num_back, num_forward=num_forward)


def _resolve_config(config, phase: _Phase, dtype, backward: bool,
                    interpret: bool) -> KernelConfig:
  if config is None:
    config = default_config(phase.num_lanes, phase.channels, dtype,
                            backward=backward,
                            num_cores=1 if interpret else None)
  _check_config(config, phase.channels, interpret)
  return config


def _check_arguments(name, x, matrix_t, num_back, num_forward):
  if x.ndim != 4:
    raise ValueError(f"{name} must be [P, L, Q, C], got shape {x.shape}.")
  channels = x.shape[-1]
  if matrix_t.shape != (channels, channels):
    raise ValueError(f"matrix_t must be {channels}×{channels}, got "
                     f"{matrix_t.shape}.")
  if matrix_t.dtype != x.dtype:
    raise TypeError(f"matrix_t has dtype {matrix_t.dtype}, {name} has "
                    f"{x.dtype}; they must match.")
  if not is_supported(x.dtype, channels):
    raise ValueError(f"Unsupported map: dtype {x.dtype}, C={channels} (see "
                     "is_supported).")
  if num_back < 0 or num_forward < 0:
    raise ValueError(f"num_back={num_back} and num_forward={num_forward} "
                     "must be >= 0.")


def _compiler_params(config: KernelConfig):
  return plgpu.CompilerParams(num_warps=config.num_warps,
                              num_stages=config.num_stages)


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
  _check_arguments("block", block, matrix_t, num_back, num_forward)
  if num_back == 0 and num_forward == 0:
    return block
  dtype = block.dtype
  phase = _phase_of(block.shape, num_back, num_forward)
  config = _resolve_config(config, phase, dtype, False, interpret)
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
      compiler_params=_compiler_params(config), name="finola_grow_forward",
  )(jnp.reshape(step, (1,)).astype(f32),
    block.reshape(phase.num_p * phase.height * phase.num_q, channels),
    matrix_t, jnp.zeros((groups,), jnp.int32))
  return outputs[0].reshape(phase.num_p, phase.length, phase.num_q, channels)


# --------------------------------------------------------------------------
# Backward kernel.


def _backward_kernel(*refs, phase: _Phase, config: KernelConfig, dtype, eps,
                     normalized: bool, precision, interpret: bool):
  """Runs the cotangent chain of one phase; see the module docstring."""
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
  prog = _program(phase, config)
  lanes = prog.lanes
  sigma = lanes.sign * step_ref[0]
  rows = _rows(prog.first_lane, 0, bw)
  dot_precision = _dot_precision(dtype, precision, interpret)
  barriers_per_step = 2 if normalized else 1

  def barrier(ordinal, timed_out):
    return _group_barrier(counter_ref, prog.group, ordinal * splits,
                          timed_out, splits, interpret)

  def own(body):
    """Runs ``body(tile)`` over this program's column tiles."""
    def loop_body(t, carry):
      body(prog.first_tile + t)
      return carry
    lax.fori_loop(0, own_tiles, loop_body, 0)

  def zero_tile(tile):
    g_ref[rows, _cols(tile, bn)] = jnp.zeros((bw, bn), jnp.float32)

  own(zero_tile)

  def chain_step(j, timed_out):
    i = phase.num_steps - j  # Steps i = n..1; G_i → Ĝ_{i−1}.
    operand_rows = _rows(prog.first_lane, lax.rem(j, 2) * lanes_padded, bw)
    active = lanes.valid & (i <= lanes.steps)
    line = lanes.seed_line + lanes.line_step * i
    ct_rows = _canvas_rows(phase, lanes, line, active)
    prev_rows = _canvas_rows(phase, lanes, line - lanes.line_step, active)

    def gather_cotangent(tile):
      cols, index = _cols(tile, bn), _col_index(tile, bn)
      ct = _lines(ct_ref, ct_rows, index, active, 0.0).astype(jnp.float32)
      g = jnp.where(timed_out, jnp.nan, g_ref[rows, cols] + ct)
      g_ref[rows, cols] = g
      operand_ref[operand_rows, cols] = g.astype(dtype)
      _store_lines(ct_out_ref, ct_rows, index,
                   (lanes.sign[:, None] * g).astype(dtype), active)

    own(gather_cotangent)
    timed_out = barrier(barriers_per_step * j + 1, timed_out)

    def multiply(tile):
      cols = _cols(tile, bn)

      def k_step(k, acc):
        chunk = _cols(k, bk)
        return acc + lax.dot_general(
            operand_ref[operand_rows, chunk],
            _matrix_tile(matrix_t_ref, cols, chunk),
            (((1,), (1,)), ((), ())), precision=dot_precision,
            preferred_element_type=jnp.float32)

      u = lax.fori_loop(0, channels // bk, k_step,
                        jnp.zeros((bw, bn), jnp.float32))
      if not normalized:
        g_ref[rows, cols] = g_ref[rows, cols] + sigma[:, None] * u
        return
      z = _lines(canvas_ref, prev_rows, _col_index(tile, bn), active, 0.0)
      z_mean, z_m2 = _tile_partials(z.astype(jnp.float32))
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
    z_means, z_m2s, u_sums, uz_sums = _load_partials(
        (zmean_ref, zm2_ref, usum_ref, uz_ref), rows, num_tiles)
    mu, r, deviation = _combine_stats(z_means, z_m2s, bn, channels, eps)
    mean_u = jnp.sum(u_sums, axis=1) / channels
    # Σ u (z − μ) = Σ_t [Σ_tile u (z − m_t) + (m_t − μ) Σ_tile u].
    mean_u_zhat = r * (jnp.sum(uz_sums, axis=1)
                       + jnp.sum(deviation * u_sums, axis=1)) / channels

    def pull_back(tile):
      cols = _cols(tile, bn)
      z = _lines(canvas_ref, prev_rows, _col_index(tile, bn), active, 0.0)
      zhat = (z.astype(jnp.float32) - mu[:, None]) * r[:, None]
      jt_u = r[:, None] * (u_ref[rows, cols] - mean_u[:, None]
                           - zhat * mean_u_zhat[:, None])
      g_ref[rows, cols] = g_ref[rows, cols] + sigma[:, None] * jt_u

    own(pull_back)
    return timed_out

  lax.fori_loop(0, phase.num_steps, chain_step, jnp.bool_(False))


def _normalize(z: Array, eps: float) -> Array:
  mean = jnp.mean(z, axis=-1, keepdims=True)
  centred = z - mean
  var = jnp.mean(jnp.square(centred), axis=-1, keepdims=True)
  return centred * lax.rsqrt(var + eps)


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
      z = _normalize(z.astype(jnp.float32), eps).astype(canvas.dtype)
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
  _check_arguments("canvas", canvas, matrix_t, num_back, num_forward)
  if cotangent.shape != canvas.shape or cotangent.dtype != canvas.dtype:
    raise ValueError(f"cotangent {cotangent.shape} {cotangent.dtype} must "
                     f"match canvas {canvas.shape} {canvas.dtype}.")
  num_p, length, num_q, channels = canvas.shape
  height = length - num_back - num_forward
  if height < 1:
    raise ValueError(f"canvas has {length} lines, fewer than num_back="
                     f"{num_back} + num_forward={num_forward} + 1.")
  dtype = canvas.dtype
  f32 = jnp.float32
  if num_back == 0 and num_forward == 0:
    return (cotangent, jnp.zeros_like(matrix_t), jnp.zeros((), f32))
  phase = _phase_of((num_p, height, num_q, channels), num_back, num_forward)
  config = _resolve_config(config, phase, dtype, True, interpret)
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
      interpret=interpret, compiler_params=_compiler_params(config),
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
  step32 = jnp.asarray(step, f32)
  return (d_block.astype(dtype), (step32 * h).astype(dtype),
          jnp.sum(matrix_t.astype(f32) * h))
