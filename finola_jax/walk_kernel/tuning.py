# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Which maps the kernels take, and their tiles and launch parameters.

:func:`is_supported` says which maps the kernels handle; :class:`KernelConfig`
holds one kernel's tiles; :func:`default_config` picks them with a small
cost model and :func:`candidate_configs` proposes alternatives worth timing.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

import jax
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu
import jax.numpy as jnp

SUPPORTED_DTYPES = (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16),
                    jnp.dtype(jnp.float16))
CHANNEL_MULTIPLE = 16  # The smallest tile edge Triton's dot accepts.
MAX_CHANNELS = 4096
# Phases larger than this are split over P into several launches, each
# addressed with int32 offsets (with room for a row past the end). Pallas'
# Triton lowering would itself switch a buffer over 2³² bytes to int64
# offsets (tests/test_walk_kernel.py checks the IR), so the split is not
# needed for correctness: it trades copying each launch's slice for 32-bit
# addressing. Which of the two is faster has not been timed on a GPU.
MAX_CANVAS_ELEMENTS = 2**31 - 2 * MAX_CHANNELS
# Lanes are padded to a multiple of block_walkers (≤ 128) and the scratch
# holds two rows of C per lane (two parities): a launch keeps this many rows
# of C spare for the padding.
_PADDING_ROWS = 4 * 128

_DEFAULT_NUM_CORES = 132  # H100 SXM.


def _launch_budget(channels: int) -> int:
  """Elements a launch's largest buffer may hold, padding aside."""
  return MAX_CANVAS_ELEMENTS - _PADDING_ROWS * channels


def launch_size(num_p: int, length: int, num_q: int, channels: int) -> int:
  """Leading indices per launch of a ``[P, L, Q, C]`` phase.

  The largest divisor of ``P`` whose launches keep every buffer under
  :data:`MAX_CANVAS_ELEMENTS`: ``P`` itself for any phase under 2³¹
  elements. Walkers of different ``p`` never interact, so a phase can be
  cut over ``P`` without changing a value.

  Raises:
    ValueError: one leading index alone exceeds the limit.
  """
  # Per p the canvas holds L·Q·C elements and the scratch 4·Q·C (two
  # directions, two parities): more when L < 4.
  per_p = max(length, 4) * num_q * channels
  fits = _launch_budget(channels) // per_p
  if fits < 1:
    raise ValueError(
        f"One walker row of the canvas [P, L={length}, Q={num_q}, "
        f"C={channels}] needs {per_p} elements, over the kernel's int32 "
        f"limit of {MAX_CANVAS_ELEMENTS}; use implementation='xla'.")
  return max(d for d in range(1, min(fits, num_p) + 1) if num_p % d == 0)


def is_supported(dtype, channels: int,
                 image_elements: Optional[int] = None) -> bool:
  """Whether the kernels handle maps of ``dtype`` with ``channels`` channels.

  Args:
    dtype: the map dtype ``D``.
    channels: ``C``.
    image_elements: optionally, ``H·W·C`` of one map of the call. Phases
      of any batch are cut into launches under 2³¹ elements
      (:func:`launch_size`), so only one map has to fit.

  Returns:
    True for float32, bfloat16 or float16 with ``C`` a multiple of 16 up to
    :data:`MAX_CHANNELS` (and one map within the int32 offsets when given).
  """
  if jnp.dtype(dtype) not in SUPPORTED_DTYPES:
    return False
  if channels % CHANNEL_MULTIPLE or not 0 < channels <= MAX_CHANNELS:
    return False
  return image_elements is None or image_elements <= _launch_budget(channels)


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


def check_config(config: KernelConfig, channels: int, interpret: bool):
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



def dot_precision(dtype, precision, interpret: bool):
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



def resolve_config(config, phase, dtype, backward: bool,
                   interpret: bool) -> KernelConfig:
  if config is None:
    config = default_config(phase.num_lanes, phase.channels, dtype,
                            backward=backward,
                            num_cores=1 if interpret else None)
  check_config(config, phase.channels, interpret)
  return config


def check_arguments(name, x, matrix_t, num_back, num_forward):
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


def compiler_params(config: KernelConfig):
  return plgpu.CompilerParams(num_warps=config.num_warps,
                              num_stages=config.num_stages)
