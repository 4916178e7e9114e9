# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""In-kernel barriers of a program group, and the statistics that cross them.

Each program computes per-tile (mean, M2) partials of its own columns; after
the group's barrier every program combines all partials into the row's
mean and ``rsqrt(var + eps)`` (Chan's formula).
"""

from __future__ import annotations

from jax import lax
from jax.experimental.pallas import triton as plgpu
import jax.numpy as jnp

# Polls of a group counter before a program gives up waiting (about a second
# on an H100). Only a group that is not co-resident can wait that long.
_SPIN_LIMIT = 1 << 20


def group_barrier(counter_ref, group, target, timed_out, splits: int,
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


def tile_partials(z):
  """Mean and sum of squared deviations of each row of a ``[bw, bn]`` tile."""
  mean = jnp.mean(z, axis=1)
  return mean, jnp.sum(jnp.square(z - mean[:, None]), axis=1)


def load_partials(refs, rows, num_tiles: int):
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


def combine_stats(means, m2s, tile_width: int, channels: int, eps: float):
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
