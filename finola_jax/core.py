# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""The FINOLA autoregression as pure functions.

Conventions (see FINOLA.md): feature maps are ``[..., H, W, C]``, row ``y``
runs top to bottom, column ``x`` left to right; matrices act on column vectors,
so ``Δz = A ẑ`` is ``ẑ @ A.T`` in array code. One step of size ``s``:

    right: z ← z + s·A ẑ      left: z ← z − s·A ẑ
    down:  z ← z + s·B ẑ      up:   z ← z − s·B ẑ

with ``ẑ = normalize(z)``. A path grows the map in one or two phases, each
along one axis by walks away from what is known; walks that leave a line of
seeds in opposite directions share one loop step, so each step is a single
matrix multiply over all active walkers, written straight into the map.
Each phase runs on a backend (``walk_xla``: ``jax.lax.scan`` loops;
``walk_kernel``: a Pallas GPU kernel) that also provides its backward, which
reads every state back from the finished map: reverse mode saves nothing but
the map. Forward-mode differentiation (``jax.jvp``, ``jax.jacfwd``) is not
supported; reverse mode (``jax.grad``, ``jax.vjp``) is, to any order and in
every dtype (the Pallas kernel's phases are differentiated, beyond the
first order, as the XLA phases that compute the same function).
"""

from __future__ import annotations

import functools
import importlib
from typing import NamedTuple, Optional, Tuple, Union

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np

from finola_jax import numerics
from finola_jax import walk_xla

Array = jax.Array
ArrayLike = Union[jax.Array, np.ndarray, float]

PATHS = ("vertical_first", "horizontal_first", "average")
CORNERS = ("top_left", "top_right", "bottom_left", "bottom_right")
IMPLEMENTATIONS = ("auto", "xla", "pallas")
PRECISION_NAMES = ("default", "high", "highest", "fastest", "bfloat16",
                   "bfloat16_3x", "tensorfloat32", "float32")


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
  return numerics.normalize(z, eps)


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


def _check_precision(precision) -> Optional[jax.lax.Precision]:
  """``None``, or the ``jax.lax.Precision`` that ``precision`` names."""
  if precision is None or isinstance(precision, jax.lax.Precision):
    return precision
  if isinstance(precision, str):
    try:
      return jax.lax.Precision(precision.lower())
    except ValueError:
      pass
  raise ValueError(
      f"Unknown precision {precision!r}; expected None, a jax.lax.Precision "
      f"or one of its names {PRECISION_NAMES} (any case).")


def _check_implementation(implementation: str) -> None:
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f"Unknown implementation {implementation!r}; expected "
                     f"one of {IMPLEMENTATIONS}.")


def _default_platform() -> str:
  """The default backend's lowering platform: ``"cpu"``, ``"cuda"``, ..."""
  backend = jax.extend.backend.get_backend()
  if backend.platform == "gpu":
    return "cuda" if "cuda" in backend.platform_version else "rocm"
  return backend.platform


def select_implementation(implementation: str, dtype, channels: int,
                          image_elements: int, *,
                          platform: Optional[str] = None
                          ) -> Tuple[str, bool]:
  """``(backend, interpret)`` the walks use when lowered for ``platform``.

  ``"auto"`` takes the Pallas kernel on a CUDA GPU for 16-bit maps where it
  supports the channel count and the size of one map, else the XLA scans:
  on an H100 the kernel ran bfloat16 walks 1.5–2.2× faster than the scans,
  and float32 walks 1.5× slower (README, "Benchmarks"). ``"pallas"``
  off a CUDA GPU runs the kernel in interpret mode (slow; for testing).
  The walks make this choice per lowering platform
  (``jax.lax.platform_dependent``), so a computation lowered for another
  platform than the default backend gets that platform's backend.

  Args:
    implementation: ``"auto"``, ``"xla"`` or ``"pallas"``.
    dtype: the map's dtype.
    channels: ``C``.
    image_elements: ``H·W·C`` of one map (the kernel cuts a batch into
      launches of at most 2³¹ elements; one map must fit).
    platform: a lowering platform (``"cpu"``, ``"cuda"``, ``"rocm"``,
      ``"tpu"``); the default device's when None.
  """
  if platform is None:
    platform = _default_platform()
  if implementation == "xla":
    return "xla", False
  on_cuda = platform == "cuda"
  if implementation == "pallas":
    return "pallas", not on_cuda
  if on_cuda and jnp.dtype(dtype).itemsize == 2 and _walk_kernel(
  ).is_supported(jnp.dtype(dtype), channels, image_elements=image_elements):
    return "pallas", False
  return "xla", False


def _walk_kernel():
  # Imported on first use: the Pallas kernel is only needed when selected.
  return importlib.import_module("finola_jax.walk_kernel")


# --------------------------------------------------------------------------
# The walks. A path is one or two phases; each phase grows the map along
# one axis by walks away from what is already known (see walk_xla for the
# canonical layout and the two functions each backend implements). A path's
# gradient is a custom VJP whose only saved array is the finished map: every
# phase's canvas is a rectangle of it, and every state is read back from it.

_VERTICAL, _HORIZONTAL = 1, 2  # The axis a phase grows, in [P, H, W, C].


class _Plan(NamedTuple):
  """Static description of one path (hashable: a ``custom_vjp`` argument).

  ``phases``: ``(axis, num_back, num_forward)`` in walk order, phases with
  no steps left out; ``extents``: ``(up, down, left, right)``;
  ``backends``: ``(backend, interpret)`` lowered for CUDA and elsewhere (see
  :func:`select_implementation`); ``scale``:
  the path's output is ``scale ×`` its map (``average`` sums two paths at
  0.5, so no halved cotangent map is ever made).
  """
  phases: Tuple[Tuple[int, int, int], ...]
  extents: Tuple[int, int, int, int]
  eps: float
  normalized: bool
  precision: Optional[jax.lax.Precision]
  backends: Tuple[Tuple[str, bool], Tuple[str, bool]]
  scale: float


def _canonical(x: Array, axis: int) -> Array:
  """``[P, rows, cols, C]`` as the phase's ``[P', L, Q, C]`` (free reshape)."""
  if axis == _VERTICAL:
    return x
  batch, rows, cols, channels = x.shape
  return x.reshape(batch * rows, cols, 1, channels)


def _from_canonical(y: Array, axis: int, batch: int) -> Array:
  if axis == _VERTICAL:
    return y
  walkers, length, _, channels = y.shape
  return y.reshape(batch, walkers // batch, length, channels)


_XLA = ("xla", False)


def _grow(plan: _Plan, function: str, num_back: int, num_forward: int,
          *args):
  """``grow_forward`` or ``grow_backward`` of one phase on the plan's backend.

  When CUDA and the other platforms use different backends, the choice is
  staged out per lowering platform. The kernel has no derivatives of its
  own: a phase that may run it is differentiated (higher orders of reverse
  mode differentiate the backward) as the XLA phase, which computes the
  same function.
  """
  def on(backend_and_interpret):
    backend, interpret = backend_and_interpret
    kwargs = dict(num_back=num_back, num_forward=num_forward, eps=plan.eps,
                  normalized=plan.normalized, precision=plan.precision)
    if backend == "pallas":
      kwargs["interpret"] = interpret
    module = walk_xla if backend == "xla" else _walk_kernel()
    return functools.partial(getattr(module, function), **kwargs)

  on_cuda, elsewhere = plan.backends
  if on_cuda == elsewhere == _XLA:
    return on(_XLA)(*args)

  @jax.custom_jvp
  def grow(*grow_args):
    if on_cuda == elsewhere:
      return on(elsewhere)(*grow_args)
    return jax.lax.platform_dependent(*grow_args, cuda=on(on_cuda),
                                      default=on(elsewhere))

  @grow.defjvp
  def grow_jvp(primals, tangents):
    return jax.jvp(on(_XLA), primals, tangents)

  return grow(*args)


def _regions(plan: _Plan, rows: int, cols: int):
  """Rows and columns of the map known after each phase (slices)."""
  up, down, left, right = plan.extents
  row_slice, col_slice = slice(up, up + rows), slice(left, left + cols)
  regions = []
  for axis, _, _ in plan.phases:
    if axis == _VERTICAL:
      row_slice = slice(0, up + rows + down)
    else:
      col_slice = slice(0, left + cols + right)
    regions.append((row_slice, col_slice))
  return regions


def _path_forward(block: Array, A_t: Array, B_t: Array, step: Array,
                  plan: _Plan) -> Array:
  """The unscaled ``[P, H, W, C]`` map grown from ``block`` ``[P, h, w, C]``."""
  x = block
  for axis, num_back, num_forward in plan.phases:
    matrix_t = B_t if axis == _VERTICAL else A_t
    canvas = _grow(plan, "grow_forward", num_back, num_forward,
                   _canonical(x, axis), matrix_t, step)
    x = _from_canonical(canvas, axis, block.shape[0])
  return x


def _scaled(feature_map: Array, scale: float) -> Array:
  return feature_map if scale == 1.0 else feature_map * jnp.asarray(
      scale, feature_map.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _walk_path(block: Array, A_t: Array, B_t: Array, step: Array,
               plan: _Plan) -> Array:
  """``plan.scale ×`` the map of one path (see :class:`_Plan`)."""
  return _scaled(_path_forward(block, A_t, B_t, step, plan), plan.scale)


def _walk_path_fwd(block, A_t, B_t, step, plan):
  feature_map = _path_forward(block, A_t, B_t, step, plan)
  return _scaled(feature_map, plan.scale), (feature_map, A_t, B_t, step)


def _walk_path_bwd(plan, residuals, cotangent):
  """Walks the phases back; each re-reads its states from the map.

  Phase ``k``'s canvas is the rectangle of the map known after phase ``k``
  (walks never change what they start from), so the map is the only saved
  array. The scale is applied to the small results, not to the cotangent.
  """
  feature_map, A_t, B_t, step = residuals
  batch = feature_map.shape[0]
  grads = {_VERTICAL: jnp.zeros_like(B_t), _HORIZONTAL: jnp.zeros_like(A_t)}
  d_step = jnp.zeros_like(step)
  up, down, left, right = plan.extents
  rows = feature_map.shape[1] - up - down
  cols = feature_map.shape[2] - left - right
  regions = _regions(plan, rows, cols)
  for (axis, num_back, num_forward), (row_slice, col_slice) in zip(
      reversed(plan.phases), reversed(regions)):
    canvas = feature_map[:, row_slice, col_slice]
    matrix_t = B_t if axis == _VERTICAL else A_t
    d_block, d_matrix_t, d_phase_step = _grow(
        plan, "grow_backward", num_back, num_forward, _canonical(canvas, axis),
        _canonical(cotangent, axis), matrix_t, step)
    cotangent = _from_canonical(d_block, axis, batch)
    grads[axis] = grads[axis] + d_matrix_t
    d_step = d_step + d_phase_step
  return tuple(_scaled(g, plan.scale) for g in (
      cotangent, grads[_HORIZONTAL], grads[_VERTICAL], d_step))


_walk_path.defvjp(_walk_path_fwd, _walk_path_bwd)


def _fill(block: Array, A_t: Array, B_t: Array, extents, path: str,
          step: Array, eps: float, normalized: bool, precision,
          implementation: str) -> Array:
  """Grows a ``[..., h, w, C]`` block by walks away from it.

  ``extents = (up, down, left, right)`` counts the rows/columns to add on
  each side. ``vertical_first`` extends the block's columns up and down, then
  every row left and right; ``horizontal_first`` the rows first, then every
  column; ``average`` is the mean of the two maps.
  """
  up, down, left, right = extents
  batch_shape, (h, w, channels) = block.shape[:-3], block.shape[-3:]
  height, width = up + h + down, left + w + right
  # Lowered for CUDA, and for every other platform (they choose as the CPU).
  backends = tuple(
      select_implementation(implementation, block.dtype, channels,
                            height * width * channels, platform=platform)
      for platform in ("cuda", "cpu"))
  vertical = ((_VERTICAL, up, down),) if up or down else ()
  horizontal = ((_HORIZONTAL, left, right),) if left or right else ()
  orders = {"vertical_first": [vertical + horizontal],
            "horizontal_first": [horizontal + vertical],
            "average": [vertical + horizontal, horizontal + vertical]}[path]
  orders = list(dict.fromkeys(orders))  # One path when both are the same.
  if not orders[0]:
    return block  # Nothing to walk: the block is the map.
  block = block.reshape((-1, h, w, channels))
  maps = [_walk_path(block, A_t, B_t, step, _Plan(
      phases, tuple(extents), float(eps), bool(normalized), precision,
      backends, 1.0 / len(orders))) for phases in orders]
  feature_map = maps[0] if len(maps) == 1 else maps[0] + maps[1]
  return feature_map.reshape(batch_shape + feature_map.shape[1:])


def _prepare(x: Array, name: str, A, B, step, precision, implementation):
  """Validates the shared arguments; returns (x, A_t, B_t, step, precision).

  ``x``, ``A_t``, ``B_t`` come back in the output dtype, ``step`` in the
  walkers' carry dtype.
  """
  _check_floating(name, x)
  _check_matrices(A, B, x.shape[-1], name)
  _check_step(step)
  precision = _check_precision(precision)
  _check_implementation(implementation)
  dtype = jnp.result_type(x, A, B)
  A_t = jnp.asarray(A).astype(dtype).T
  B_t = jnp.asarray(B).astype(dtype).T
  step = jnp.asarray(step).astype(walk_xla.carry_dtype(dtype))
  return x.astype(dtype), A_t, B_t, step, precision


def unroll(q: ArrayLike, A: ArrayLike, B: ArrayLike, height: int, width: int,
           *, origin: Optional[Tuple[int, int]] = None,
           path: str = "vertical_first", step: ArrayLike = 1.0,
           eps: float = 1e-6, normalized: bool = True,
           precision: Union[None, str, jax.lax.Precision] = None,
           implementation: str = "auto") -> Array:
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

  A single path takes ``max(r0, H−1−r0) + max(c0, W−1−c0)`` sequential steps,
  each one matrix multiply over all active walkers. The map is computed in
  the output dtype ``D``; each walker carries its state in
  ``promote(D, float32)`` and casts it when written. ``height``, ``width``,
  ``origin``, ``path``, ``eps``, ``normalized``, ``precision`` and
  ``implementation`` must be static under ``jit``; ``q``, ``A``, ``B`` and
  ``step`` may be traced and differentiated in reverse mode (``jax.grad``,
  ``jax.vjp``, any order): the backward walks the lines back, re-reading
  every state from the finished map, so it keeps nothing else (about twice
  the map's bytes: the map and its cotangent). Forward mode (``jax.jvp``,
  ``jax.jacfwd``) is not supported.

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
    precision: of every step's matrix multiply, forward and backward:
      ``None`` (JAX's default, ``jax.default_matmul_precision``), a
      ``jax.lax.Precision`` or one of its names (``"default"``, ``"high"``,
      ``"highest"``, ... in any case). For float32, ``"default"`` is one
      TF32 pass on GPUs with tensor cores (A100, H100), one bfloat16 pass on
      TPU, and full float32 on CPU; ``"highest"`` is full float32
      everywhere.
    implementation: ``"xla"`` (``jax.lax.scan`` loops), ``"pallas"`` (the
      Pallas GPU kernel; interpreted, slowly, off a CUDA GPU) or ``"auto"``
      (the kernel on a CUDA GPU for bfloat16/float16 maps whose ``C`` and
      size it supports, else XLA: in float32 the scans are faster), decided
      when traced.

  Returns:
    ``[..., H, W, C]`` map of dtype ``jnp.result_type(q, A, B)``;
    ``map[..., r0, c0, :] == q``.
  """
  q = jnp.asarray(q)
  if q.ndim < 1:
    raise ValueError(f"q must have shape [..., C], got a scalar of shape {q.shape}.")
  height, width = _check_size(height, width)
  _check_path(path)
  row, col = resolve_origin(height, width, origin)
  q, A_t, B_t, step, precision = _prepare(q, "q", A, B, step, precision,
                                          implementation)
  extents = (row, height - 1 - row, col, width - 1 - col)
  return _fill(q[..., None, None, :], A_t, B_t, extents, path, step, eps,
               normalized, precision, implementation)


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
                precision: Union[None, str, jax.lax.Precision] = None,
                implementation: str = "auto") -> Array:
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
    path, step, eps, normalized, precision, implementation: as in
      :func:`unroll`.

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
  block, A_t, B_t, step, precision = _prepare(block, "block", A, B, step,
                                              precision, implementation)
  return _fill(block, A_t, B_t, extents, path, step, eps, normalized,
               precision, implementation)


# --------------------------------------------------------------------------
# Multi-path FINOLA: M initial vectors, each with its own A_m, B_m. These are
# ``jax.vmap`` of the single-path functions over the path axis, not a second
# implementation: the scans, the custom VJP and ``pallas_call`` all have
# batching rules, and vmap turns every walk of the Pallas kernel into one
# launch with a leading grid axis over the paths (its barrier counters are
# batched with it, one set per path), so all M paths take one call per phase
# on either backend. The single-path functions stay the reference; these
# check the stacked shapes first so that a mistake names the path axis.


def _check_stacked(x: Array, name: str, A, B, axis: int) -> int:
  """Checks ``A``, ``B`` ``[M, C, C]`` against ``x``'s path axis; returns M."""
  for matrix_name, m in (("A", A), ("B", B)):
    if jnp.ndim(m) != 3 or jnp.shape(m)[1] != jnp.shape(m)[2]:
      raise ValueError(
          f"{matrix_name} must stack one C×C matrix per path, shape [M, C, C], "
          f"got shape {jnp.shape(m)}.")
  if jnp.shape(A) != jnp.shape(B):
    raise ValueError(f"A and B must have the same shape [M, C, C], got "
                     f"{jnp.shape(A)} and {jnp.shape(B)}.")
  paths = jnp.shape(A)[0]
  if x.ndim < -axis or x.shape[axis] != paths:
    raise ValueError(
        f"{name} must have the path axis M={paths} (A's first axis) at "
        f"position {axis}, got shape {x.shape}.")
  return paths


def unroll_paths(q: ArrayLike, A: ArrayLike, B: ArrayLike, height: int,
                 width: int, **options) -> Array:
  """:func:`unroll` of M initial vectors, path ``m`` with its own ``A_m, B_m``.

  ``unroll_paths(q, A, B, H, W)[..., m, :, :, :] ==
  unroll(q[..., m, :], A[m], B[m], H, W)`` for every ``m``. It is
  ``jax.vmap(unroll)`` over the path axis, so any single-path call can be
  batched the same way (``jax.vmap(functools.partial(unroll, height=H,
  width=W), in_axes=(-2, 0, 0), out_axes=-4)``); on the Pallas backend each
  phase is one launch whose grid has an extra leading axis over the paths.

  Args:
    q: ``[..., M, C]`` initial vectors.
    A, B: ``[M, C, C]`` matrices, one pair per path.
    height, width: map size (static).
    **options: keyword arguments of :func:`unroll` (``origin``, ``path``,
      ``step``, ``eps``, ``normalized``, ``precision``, ``implementation``);
      ``step`` is shared by the paths.

  Returns:
    ``[..., M, H, W, C]`` maps.
  """
  q = jnp.asarray(q)
  _check_stacked(q, "q", A, B, -2)
  axis = q.ndim - 2
  return jax.vmap(
      lambda q_m, A_m, B_m: unroll(q_m, A_m, B_m, height, width, **options),
      in_axes=(axis, 0, 0), out_axes=axis)(q, A, B)


def extrapolate_paths(block: ArrayLike, A: ArrayLike, B: ArrayLike,
                      height: int, width: int, **options) -> Array:
  """:func:`extrapolate` of M corner blocks, path ``m`` with ``A_m, B_m``.

  ``extrapolate_paths(block, A, B, H, W)[..., m, :, :, :] ==
  extrapolate(block[..., m, :, :, :], A[m], B[m], H, W)``; a ``jax.vmap``
  of :func:`extrapolate` over the path axis, as :func:`unroll_paths`.

  Args:
    block: ``[..., M, h, w, C]`` known corners.
    A, B: ``[M, C, C]`` matrices, one pair per path.
    height, width: size of the completed maps (static).
    **options: keyword arguments of :func:`extrapolate`.

  Returns:
    ``[..., M, height, width, C]`` maps.
  """
  block = jnp.asarray(block)
  if block.ndim < 4:
    raise ValueError(
        f"block must have shape [..., M, h, w, C], got shape {block.shape}.")
  _check_stacked(block, "block", A, B, -4)
  axis = block.ndim - 4
  return jax.vmap(
      lambda b_m, A_m, B_m: extrapolate(b_m, A_m, B_m, height, width,
                                        **options),
      in_axes=(axis, 0, 0), out_axes=axis)(block, A, B)
