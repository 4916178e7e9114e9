# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""The one slow, independent reference of FINOLA's walks, for every test.

A transcription of the conventions in FINOLA.md with plain Python loops, one
line of the map per step; it shares no code with finola_jax (no scans, no
stacking of walkers, no canonical layout, no storage view). By default it
runs in float64 numpy. With ``xp=jax.numpy`` the same loops run in JAX, in
the inputs' dtype, to be differentiated (``jax.vjp``, ``jax.grad``) or run on
an accelerator (``tools/gpu_kernel_check.py``).

Matrices act on column vectors: a step is ``z ± s·M ẑ``, ``ẑ @ Mᵀ`` in array
code, with ``ẑ = (z − mean(z)) / sqrt(var(z) + eps)`` over the last axis
(population variance).
"""

import numpy as np


def _asarray(x, xp):
  return np.asarray(x, np.float64) if xp is np else xp.asarray(x)


def normalize(z, eps=1e-6, xp=np):
  """``(z − mean) / sqrt(var + eps)`` over the last axis of ``z [..., C]``."""
  z = _asarray(z, xp)
  mean = xp.mean(z, axis=-1, keepdims=True)
  var = xp.mean((z - mean) ** 2, axis=-1, keepdims=True)
  return (z - mean) / xp.sqrt(var + eps)


def _step(z, matrix, sign, step, eps, normalized, xp):
  """One FINOLA step ``z + sign·s·M ẑ`` of every row of ``z [..., C]``."""
  zhat = normalize(z, eps, xp) if normalized else z
  return z + sign * step * (zhat @ matrix.T)


def _extend(x, matrix, before, after, axis, step, eps, normalized, xp):
  """``x`` grown along ``axis`` (−3: rows, −2: columns) by walks.

  ``before`` lines are walked from the first line with ``−s``, ``after``
  lines from the last with ``+s``.
  """
  lines = [xp.take(x, i, axis=axis) for i in range(x.shape[axis])]
  z = lines[0]
  for _ in range(before):
    z = _step(z, matrix, -1.0, step, eps, normalized, xp)
    lines.insert(0, z)
  z = lines[-1]
  for _ in range(after):
    z = _step(z, matrix, 1.0, step, eps, normalized, xp)
    lines.append(z)
  return xp.stack(lines, axis=axis)


def fill(block, A, B, extents, path="vertical_first", step=1.0, eps=1e-6,
         normalized=True, xp=np):
  """Grows ``block [..., h, w, C]`` by ``extents = (up, down, left, right)``.

  ``vertical_first`` extends the block's columns up (``−s B``) and down
  (``+s B``), then every row left (``−s A``) and right (``+s A``);
  ``horizontal_first`` the rows first, then every column; ``average`` is
  the mean of the two maps.
  """
  block, A, B = (None if v is None else _asarray(v, xp)
                 for v in (block, A, B))
  up, down, left, right = extents

  def vertical(x):
    return _extend(x, B, up, down, -3, step, eps, normalized, xp)

  def horizontal(x):
    return _extend(x, A, left, right, -2, step, eps, normalized, xp)

  if path == "vertical_first":
    return horizontal(vertical(block))
  if path == "horizontal_first":
    return vertical(horizontal(block))
  if path == "average":
    return 0.5 * (horizontal(vertical(block)) + vertical(horizontal(block)))
  raise ValueError(f"Unknown path {path!r}.")


def unroll(q, A, B, height, width, origin=None, path="vertical_first",
           step=1.0, eps=1e-6, normalized=True, xp=np):
  """``[..., H, W, C]`` map grown from ``q [..., C]`` at ``origin``."""
  r0, c0 = (height // 2, width // 2) if origin is None else origin
  q = _asarray(q, xp)
  return fill(q[..., None, None, :], A, B,
              (r0, height - 1 - r0, c0, width - 1 - c0), path, step, eps,
              normalized, xp)


def corner_extents(corner, block_hw, height, width):
  """``(up, down, left, right)`` around an ``h×w`` block in ``corner``."""
  h, w = block_hw
  rows = (height - h, 0) if corner.startswith("bottom") else (0, height - h)
  cols = (width - w, 0) if corner.endswith("right") else (0, width - w)
  return rows + cols


def extrapolate(block, A, B, height, width, corner="top_left",
                path="vertical_first", step=1.0, eps=1e-6, normalized=True,
                xp=np):
  """``[..., height, width, C]`` map completed from a corner block."""
  extents = corner_extents(corner, np.shape(block)[-3:-1], height, width)
  return fill(block, A, B, extents, path, step, eps, normalized, xp)


def grow(block, matrix_t, step, num_back, num_forward, eps=1e-6,
         normalized=True, xp=np):
  """One phase in the backends' canonical layout.

  ``block [P, h, Q, C]`` grown along axis 1: ``num_back`` lines before it
  (``z ← z − s·n(z) @ matrix_t``) and ``num_forward`` after it (``+s``).
  """
  matrix_t = _asarray(matrix_t, xp)
  return fill(block, None, matrix_t.T, (num_back, num_forward, 0, 0),
              "vertical_first", step, eps, normalized, xp)
