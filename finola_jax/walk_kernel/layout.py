# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Phase and lane layout: which lane walks where, and how tiles are addressed.

A lane is one walker of one direction; lane ``d·P·Q + p·Q + q`` is walker
``(p, q)`` of direction ``d``. The canvas is addressed as ``[P·L·Q, C]`` rows.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Tuple

import jax
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu
import jax.numpy as jnp

from finola_jax.walk_kernel.tuning import KernelConfig

Array = jax.Array


class Direction(NamedTuple):
  sign: float       # −1: backward walkers, +1: forward walkers.
  steps: int        # Steps of this direction's walk.
  seed_line: int    # Canvas line of z_0; z_i is at seed_line + line_step·i.
  line_step: int


@dataclasses.dataclass(frozen=True)
class Phase:
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
  def directions(self) -> Tuple[Direction, ...]:
    dirs = []
    if self.num_back:
      dirs.append(Direction(-1.0, self.num_back, self.num_back, -1))
    if self.num_forward:
      dirs.append(Direction(1.0, self.num_forward,
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


class Lanes(NamedTuple):
  """Per-lane ``[bw]`` vectors of one walker block (in-kernel values)."""
  valid: Array      # bool: a real lane (not padding).
  first_dir: Array  # bool: lane of the first direction (copies the block).
  sign: Array       # f32
  steps: Array      # i32
  seed_line: Array  # i32
  line_step: Array  # i32
  p: Array          # i32
  q: Array          # i32


def _lanes(phase: Phase, first_lane, bw: int) -> Lanes:
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

  return Lanes(
      valid=valid, first_dir=first_dir & valid,
      sign=per_direction("sign", jnp.float32),
      steps=jnp.where(valid, per_direction("steps", jnp.int32), 0),
      seed_line=per_direction("seed_line", jnp.int32),
      line_step=per_direction("line_step", jnp.int32),
      p=lax.div(walker, jnp.int32(phase.num_q)),
      q=lax.rem(walker, jnp.int32(phase.num_q)))


def canvas_rows(phase: Phase, lanes: Lanes, line, mask) -> Array:
  """Rows ``(p·L + line)·Q + q`` of the flattened ``[P·L·Q, C]`` canvas.

  Masked-off lanes get the row one past the end: the GPU never touches it,
  and the interpreter (which scatters masked stores as read-modify-write)
  drops it instead of racing a real lane on a shared dummy row.
  """
  rows = (lanes.p * phase.length + line) * phase.num_q + lanes.q
  return jnp.where(mask, rows, phase.num_p * phase.length * phase.num_q)


def load_lines(canvas_ref, rows, cols, mask, other=None):
  """Loads ``canvas[rows, cols]`` (``[bw, bn]``) where ``mask`` (per row)."""
  shape = (rows.shape[0], cols.shape[0])
  return plgpu.load(canvas_ref.at[rows[:, None], cols[None, :]],
                    mask=jnp.broadcast_to(mask[:, None], shape), other=other)


def store_lines(canvas_ref, rows, cols, values, mask):
  # The map streams through L2 once: keep it from evicting matrix and states.
  plgpu.store(canvas_ref.at[rows[:, None], cols[None, :]], values,
              mask=jnp.broadcast_to(mask[:, None], values.shape),
              eviction_policy="evict_first")


def matrix_tile(matrix_t_ref, rows, cols):
  """A tile of ``Mᵀ``, re-read by every program every step: kept in L2."""
  return plgpu.load(matrix_t_ref.at[rows, cols], eviction_policy="evict_last")



class Program(NamedTuple):
  """Where one program sits: its group, its lanes, its column tiles."""
  group: Array
  first_lane: Array
  first_tile: Array
  lanes: Lanes


def program(phase: Phase, config: KernelConfig) -> Program:
  splits = config.column_splits
  pid = pl.program_id(0)
  group = lax.div(pid, jnp.int32(splits))
  first_lane = group * config.block_walkers
  own_tiles = phase.channels // config.block_columns // splits
  first_tile = (pid - group * splits) * own_tiles
  return Program(group, first_lane, first_tile,
                  _lanes(phase, first_lane, config.block_walkers))


def scratch_rows(first_lane, offset, bw: int):
  """``pl.ds`` of ``bw`` scratch rows starting at ``offset + first_lane``."""
  return pl.ds(pl.multiple_of(offset + first_lane, bw), bw)


def columns(tile, width: int):
  return pl.ds(pl.multiple_of(tile * width, width), width)


def column_index(tile, width: int):
  return tile * width + lax.iota(jnp.int32, width)



def phase_of(shape, num_back: int, num_forward: int) -> Phase:
  num_p, height, num_q, channels = shape
  return Phase(num_p=num_p, height=height, num_q=num_q, channels=channels,
                num_back=num_back, num_forward=num_forward)
