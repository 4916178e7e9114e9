# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""The FINOLA autoregression as pure functions.

Conventions (see FINOLA.md): feature maps are ``[..., H, W, C]``, row ``y``
runs top to bottom, column ``x`` left to right; matrices act on column vectors,
so ``Δz = A ẑ`` is ``ẑ @ A.T`` in array code. One step of size ``s``:

    right: z ← z + s·A ẑ      left: z ← z − s·A ẑ
    down:  z ← z + s·B ẑ      up:   z ← z − s·B ẑ

with ``ẑ = normalize(z)``. Every walk is a ``jax.lax.scan``; walks that leave
a line of seeds in opposite directions share one scan step, so each step is a
single matrix multiply over all active walkers, and every step writes its
states straight into the output map carried through the scan.
"""

from __future__ import annotations

import functools
from typing import Optional, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
ArrayLike = Union[jax.Array, np.ndarray, float]

PATHS = ("vertical_first", "horizontal_first", "average")
CORNERS = ("top_left", "top_right", "bottom_left", "bottom_right")


def normalize(z: ArrayLike, eps: float = 1e-6) -> Array:
  """Normalizes each vector over its last (channel) axis, without affine.

  ``ẑ = (z − mean(z)) / sqrt(var(z) + eps)`` with the population variance
  over the ``C`` channels of each position.

  Args:
    z: ``[..., C]`` floating array.
    eps: added to the variance inside the square root.

  Returns:
    ``[..., C]`` array of ``z``'s dtype.
  """
  z = jnp.asarray(z)
  _check_floating("z", z)
  if z.ndim < 1:
    raise ValueError(f"z must have a channel axis, got a scalar of shape {z.shape}.")
  mean = jnp.mean(z, axis=-1, keepdims=True)
  centred = z - mean
  var = jnp.mean(jnp.square(centred), axis=-1, keepdims=True)
  return centred * jax.lax.rsqrt(var + jnp.asarray(eps, z.dtype))


# --------------------------------------------------------------------------
# Argument validation: every check runs on static shapes and dtypes, so a bad
# argument fails before tracing with a message that names it.


def _check_floating(name: str, x) -> None:
  if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
    raise TypeError(f"{name} must have a floating dtype, got {jnp.result_type(x)}.")


def _check_matrices(A, B, channels: int, channels_of: str) -> None:
  for name, m in (("A", A), ("B", B)):
    _check_floating(name, m)
    if jnp.ndim(m) != 2 or jnp.shape(m)[0] != jnp.shape(m)[1]:
      raise ValueError(f"{name} must be a square C×C matrix, got shape {jnp.shape(m)}.")
    if jnp.shape(m)[0] != channels:
      raise ValueError(
          f"{name} is {jnp.shape(m)[0]}×{jnp.shape(m)[1]} but {channels_of} has "
          f"C={channels} channels; {name} must be {channels}×{channels}.")


def _check_size(height, width) -> Tuple[int, int]:
  for name, value in (("height", height), ("width", width)):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
      raise TypeError(f"{name} must be a Python int (static), got {value!r}.")
    if value < 1:
      raise ValueError(f"{name} must be at least 1, got {value}.")
  return int(height), int(width)


def _check_path(path: str) -> None:
  if path not in PATHS:
    raise ValueError(f"Unknown path {path!r}; expected one of {PATHS}.")


def _check_step(step) -> None:
  if jnp.ndim(step) != 0:
    raise ValueError(f"step must be a scalar, got shape {jnp.shape(step)}.")


def resolve_origin(height: int, width: int, origin=None) -> Tuple[int, int]:
  """Returns the ``(row, column)`` of the seed: ``origin`` or the centre.

  The centre of an ``H×W`` map is ``(H // 2, W // 2)``.
  """
  if origin is None:
    return height // 2, width // 2
  if len(origin) != 2:
    raise ValueError(f"origin must be a (row, column) pair, got {origin!r}.")
  if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
             for v in origin):
    raise TypeError(f"origin must hold two ints, got {origin!r}.")
  row, col = (int(v) for v in origin)
  if not (0 <= row < height and 0 <= col < width):
    raise ValueError(
        f"origin {tuple(origin)} is outside the {height}×{width} map "
        f"(rows 0..{height - 1}, columns 0..{width - 1}).")
  return row, col


# --------------------------------------------------------------------------
# The scan.


def _compute_dtypes(*arrays) -> Tuple[jnp.dtype, jnp.dtype]:
  """(dtype of inputs/outputs, dtype of the carried state).

  Low-precision maps (bfloat16, float16) carry their state in float32: the
  state accumulates hundreds of increments, which a 8-bit mantissa would lose.
  """
  dtype = jnp.result_type(*arrays)
  return dtype, jnp.promote_types(dtype, jnp.float32)


def _increment(z: Array, matrix_t: Array, eps: float, normalized: bool) -> Array:
  """``M ẑ`` for a batch of row vectors ``z`` (``matrix_t`` is ``Mᵀ``)."""
  zhat = normalize(z, eps) if normalized else z
  return jnp.matmul(zhat.astype(matrix_t.dtype), matrix_t,
                    preferred_element_type=z.dtype)


def _advance_fn(matrix_t: Array, signed_step: Array, eps: float,
                normalized: bool, remat: bool):
  """Returns the step ``z ↦ z + signed_step · M ẑ`` on ``[k, ..., C]`` states.

  With ``remat`` the step is a ``jax.checkpoint``: its normalization is
  recomputed in the backward pass instead of stored. Only the step, not the
  write into the map: the write needs nothing saved.
  """

  def advance(z):
    return z + signed_step * _increment(z, matrix_t, eps, normalized)

  if remat:
    advance = jax.checkpoint(advance,
                             policy=jax.checkpoint_policies.nothing_saveable)
  return advance


def _write_lines(canvas: Array, lines: Array, indices: Array,
                 axis: int) -> Array:
  """Puts ``lines[j]`` into ``canvas`` at ``indices[j]`` along ``axis``.

  The lines must land where ``canvas`` is still zero: they are *added*
  (one scatter-add for all ``k`` lines). Adding to zero gives the same
  values as writing them, and the transpose of an add only reads the
  cotangent map, so the backward scan passes that map through untouched.
  (A set's transpose zeroes the written lines of the carried cotangent, and
  XLA then copied the whole map on every backward step.)

  Args:
    canvas: ``[..., H, W, C]``, zero at ``indices`` along ``axis``.
    lines: ``[k, ...]``, each ``canvas`` without ``axis`` (``[..., W, C]``
      for rows, ``axis=-3``; ``[..., H, C]`` for columns, ``axis=-2``).
    indices: ``[k]`` distinct int indices along ``axis``.
    axis: -3 or -2.
  """
  where = (Ellipsis, indices) + (slice(None),) * (-axis - 1)
  return canvas.at[where].add(jnp.moveaxis(lines, 0, axis),
                              unique_indices=True, mode="promise_in_bounds")


def _scan_walks(canvas: Array, seeds: Array, signs: Tuple[float, ...],
                positions: Array, axis: int, matrix_t: Array, step: Array,
                eps: float, normalized: bool,
                remat: bool) -> Tuple[Array, Array]:
  """Runs ``k`` walks side by side, writing every state into ``canvas``.

  Walker ``j`` takes steps ``z ← z + signs[j]·s·M ẑ``; all ``k`` walkers
  share one matrix multiply per step. The state after step ``i`` goes
  straight into line ``positions[i, j]`` of the carried ``canvas`` along
  ``axis``: no stacked outputs to allocate and copy into the map afterwards.

  Args:
    canvas: ``[..., H, W, C]`` map being filled, in the carry dtype.
    seeds: ``[k, ..., C]`` starting states, one line of ``canvas`` each.
    signs: ``k`` signs (``-1.0``: backward walk, ``+1.0``: forward).
    positions: ``[length, k]`` int indices along ``axis``, distinct within
      a step and not yet written; ``length >= 1``.
    axis: -3 (walkers are rows, walking vertically) or -2 (columns,
      walking horizontally).
    matrix_t, step, eps, normalized, remat: see :func:`unroll`.

  Returns:
    ``(last, canvas)``: the ``[k, ..., C]`` states after the last step and
    the filled canvas.
  """
  signed_step = jnp.asarray(signs, seeds.dtype).reshape(
      (len(signs),) + (1,) * (seeds.ndim - 1)) * step
  advance = _advance_fn(matrix_t, signed_step, eps, normalized, remat)

  def body(carry, index):
    z, canvas = carry
    z = advance(z)
    return (z, _write_lines(canvas, z, index, axis)), None

  (last, canvas), _ = jax.lax.scan(body, (seeds, canvas), positions)
  return last, canvas


def _grow(block: Array, matrix_t: Array, num_back: int, num_forward: int,
          axis: int, step: Array, eps: float, normalized: bool,
          remat: bool) -> Array:
  """Extends ``block`` along ``axis`` (-3: rows, -2: columns) by walks.

  The backward walkers (``−s``) start from the block's first line along
  ``axis`` and add ``num_back`` lines before it, the forward walkers
  (``+s``) start from its last line and add ``num_forward`` lines after it;
  the block itself is kept as it is. For ``block`` ``[..., h, w, C]`` and
  ``axis=-3`` the result is ``[..., num_back + h + num_forward, w, C]``.

  Both directions share one scan step (one matmul) for the first
  ``min(num_back, num_forward)`` steps; the longer one then goes on alone,
  so no step is computed and dropped.
  """
  if num_back == 0 and num_forward == 0:
    return block
  widths = [(0, 0)] * block.ndim
  widths[block.ndim + axis] = (num_back, num_forward)
  canvas = jnp.pad(block, widths)
  # Backward step i lands on line num_back-1-i, forward step i on
  # num_back+size+i (indices into the zero-padded canvas).
  back_positions = num_back - 1 - jnp.arange(num_back)
  forward_positions = num_back + block.shape[axis] + jnp.arange(num_forward)
  back = jnp.take(block, 0, axis=axis)
  forward = jnp.take(block, -1, axis=axis)
  walk = functools.partial(_scan_walks, axis=axis, matrix_t=matrix_t,
                           step=step, eps=eps, normalized=normalized,
                           remat=remat)
  shared = min(num_back, num_forward)
  if shared:
    last, canvas = walk(
        canvas, jnp.stack([back, forward]), (-1.0, 1.0),
        jnp.stack([back_positions[:shared], forward_positions[:shared]],
                  axis=1))
    back, forward = last[0], last[1]
  if num_back > shared:
    canvas = walk(canvas, back[None], (-1.0,),
                  back_positions[shared:, None])[1]
  if num_forward > shared:
    canvas = walk(canvas, forward[None], (1.0,),
                  forward_positions[shared:, None])[1]
  return canvas


def _fill(block: Array, A_t: Array, B_t: Array, extents, path: str,
          step: Array, eps: float, normalized: bool, remat: bool) -> Array:
  """Grows a ``[..., h, w, C]`` block by walks away from it.

  ``extents = (up, down, left, right)`` counts the rows/columns to add on
  each side. ``vertical_first`` extends the block's columns up and down, then
  every row left and right; ``horizontal_first`` the rows first, then every
  column; ``average`` is the mean of the two maps.
  """
  up, down, left, right = extents

  def vertical(x):
    return _grow(x, B_t, up, down, -3, step, eps, normalized, remat)

  def horizontal(x):
    return _grow(x, A_t, left, right, -2, step, eps, normalized, remat)

  if path == "vertical_first":
    return horizontal(vertical(block))
  if path == "horizontal_first":
    return vertical(horizontal(block))
  return 0.5 * (horizontal(vertical(block)) + vertical(horizontal(block)))


def _prepare(x: Array, name: str, A, B, step):
  """Validates the shared arguments; returns (dtype, A_t, B_t, step, x)."""
  _check_floating(name, x)
  _check_matrices(A, B, x.shape[-1], name)
  _check_step(step)
  dtype, carry = _compute_dtypes(x, A, B)
  A_t = jnp.asarray(A).astype(dtype).T
  B_t = jnp.asarray(B).astype(dtype).T
  return dtype, A_t, B_t, jnp.asarray(step).astype(carry), x.astype(carry)


def unroll(q: ArrayLike, A: ArrayLike, B: ArrayLike, height: int, width: int,
           *, origin: Optional[Tuple[int, int]] = None,
           path: str = "vertical_first", step: ArrayLike = 1.0,
           eps: float = 1e-6, normalized: bool = True,
           remat: bool = False) -> Array:
  """Regresses a ``height × width`` feature map from one vector ``q``.

  ``q`` is placed at ``origin = (r0, c0)`` (default ``(H // 2, W // 2)``) and
  the map is filled by steps of size ``s = step``::

      z(x ± s, y) = z(x, y) ± s·A ẑ(x, y)        (right / left)
      z(x, y ± s) = z(x, y) ± s·B ẑ(x, y)        (down / up)

  with ``ẑ = normalize(z, eps)``. ``path="vertical_first"`` walks up and
  down the origin's column, then left and right along every row;
  ``"horizontal_first"`` walks the origin's row, then every column;
  ``"average"`` is the mean of the two maps. With ``step = 1/k`` the map
  samples the same solution ``k`` times more densely.

  A single path takes ``max(r0, H−1−r0) + max(c0, W−1−c0)`` sequential steps
  (``jax.lax.scan``), each one matrix multiply over all active walkers.
  ``height``, ``width``, ``origin``, ``path``, ``normalized`` and ``remat``
  must be static under ``jit``; ``q``, ``A``, ``B`` and ``step`` may be
  traced and differentiated.

  Args:
    q: ``[..., C]`` initial vector(s); any number of leading batch dims.
    A: ``[C, C]`` horizontal matrix (acts on column vectors: ``Δz = A ẑ``).
    B: ``[C, C]`` vertical matrix.
    height: number of rows ``H >= 1``.
    width: number of columns ``W >= 1``.
    origin: ``(row, column)`` of ``q``; the centre when ``None``.
    path: ``"vertical_first"``, ``"horizontal_first"`` or ``"average"``.
    step: scalar step size ``s``.
    eps: normalization epsilon (inside the square root).
    normalized: ``False`` drops the normalization (``z + s·A z``): QB-Heat's
      linear autoregression, the baseline FINOLA improves on.
    remat: recompute each step's normalization in the backward pass
      (``jax.checkpoint``) instead of storing it, halving its memory.

  Returns:
    ``[..., H, W, C]`` map of dtype ``jnp.result_type(q, A, B)`` (bfloat16
    inputs are carried in float32 and cast back); ``map[..., r0, c0, :] == q``.
  """
  q = jnp.asarray(q)
  if q.ndim < 1:
    raise ValueError(f"q must have shape [..., C], got a scalar of shape {q.shape}.")
  height, width = _check_size(height, width)
  _check_path(path)
  row, col = resolve_origin(height, width, origin)
  dtype, A_t, B_t, step, q = _prepare(q, "q", A, B, step)
  extents = (row, height - 1 - row, col, width - 1 - col)
  feature_map = _fill(q[..., None, None, :], A_t, B_t, extents, path, step,
                      eps, normalized, remat)
  return feature_map.astype(dtype)


def corner_extents(corner: str, block_shape: Tuple[int, int], height: int,
                   width: int) -> Tuple[int, int, int, int]:
  """Rows/columns ``(up, down, left, right)`` to add around a corner block."""
  if corner not in CORNERS:
    raise ValueError(f"Unknown corner {corner!r}; expected one of {CORNERS}.")
  h, w = block_shape
  rows, cols = height - h, width - w
  vertical = (rows, 0) if corner.startswith("bottom") else (0, rows)
  horizontal = (cols, 0) if corner.endswith("right") else (0, cols)
  return vertical + horizontal


def extrapolate(block: ArrayLike, A: ArrayLike, B: ArrayLike, height: int,
                width: int, *, corner: str = "top_left",
                path: str = "vertical_first", step: ArrayLike = 1.0,
                eps: float = 1e-6, normalized: bool = True,
                remat: bool = False) -> Array:
  """Completes a ``height × width`` map from a known ``h × w`` corner block.

  The block sits in ``corner`` of the map and the rest is filled by FINOLA
  steps away from it (signs as in :func:`unroll`: ``+s`` moving right/down,
  ``−s`` moving left/up). ``vertical_first`` extends the block's columns
  vertically to the far edge, then every row horizontally away from the
  block; ``horizontal_first`` extends its rows first, then every column;
  ``average`` is the mean. The block is returned unchanged, and an
  :func:`unroll` from a corner origin equals ``extrapolate`` of a 1×1 block
  at that corner with the same path.

  Args:
    block: ``[..., h, w, C]`` known corner, ``h <= height``, ``w <= width``.
    A, B: ``[C, C]`` matrices.
    height, width: size of the completed map (static).
    corner: ``"top_left"``, ``"top_right"``, ``"bottom_left"`` or
      ``"bottom_right"`` (static).
    path, step, eps, normalized, remat: as in :func:`unroll`.

  Returns:
    ``[..., height, width, C]`` map of dtype ``jnp.result_type(block, A, B)``.
  """
  block = jnp.asarray(block)
  if block.ndim < 3:
    raise ValueError(
        f"block must have shape [..., h, w, C], got shape {block.shape}.")
  height, width = _check_size(height, width)
  _check_path(path)
  h, w = block.shape[-3], block.shape[-2]
  if h < 1 or w < 1:
    raise ValueError(f"block must be at least 1×1, got {h}×{w}.")
  if h > height or w > width:
    raise ValueError(
        f"block is {h}×{w}, larger than the {height}×{width} map to fill.")
  extents = corner_extents(corner, (h, w), height, width)
  dtype, A_t, B_t, step, block = _prepare(block, "block", A, B, step)
  feature_map = _fill(block, A_t, B_t, extents, path, step, eps, normalized,
                      remat)
  return feature_map.astype(dtype)
