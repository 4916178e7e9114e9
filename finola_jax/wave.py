# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""The PDE view of FINOLA: one-way wave speeds and equation residuals.

In the continuum the two FINOLA equations are ``∂z/∂x = A ẑ`` and
``∂z/∂y = B ẑ``. Eliminating ``ẑ`` gives ``∂z/∂x = A B⁻¹ ∂z/∂y``; with
``A B⁻¹ = V Λ V⁻¹`` and ``ζ = V⁻¹ z`` every latent channel is a one-way wave
``∂ζᵢ/∂x = λᵢ ∂ζᵢ/∂y`` with (complex) speed ``λᵢ``.
"""

from __future__ import annotations

from typing import Optional, Tuple

import jax
import jax.numpy as jnp

from finola_jax import core

Array = jax.Array


def _check_pair(A, B) -> None:
  core._check_matrices(A, B, jnp.shape(A)[0] if jnp.ndim(A) == 2 else -1, "A")


def _a_times_b_inverse(A, B) -> Array:
  """``A B⁻¹`` via a solve: ``(A B⁻¹)ᵀ = B⁻ᵀ Aᵀ``."""
  A, B = jnp.asarray(A), jnp.asarray(B)
  _check_pair(A, B)
  return jnp.linalg.solve(B.T, A.T).T


def wave_speeds(A, B) -> Array:
  """The eigenvalues ``λ`` of ``A B⁻¹``: the speeds of the one-way waves.

  Args:
    A: ``[C, C]`` horizontal matrix.
    B: ``[C, C]`` vertical matrix (invertible).

  Returns:
    ``[C]`` complex speeds, in the order ``jnp.linalg.eig`` gives them.
    ``jnp.linalg.eig`` runs on the host CPU backend.
  """
  return jnp.linalg.eigvals(_a_times_b_inverse(A, B))


def wave_basis(A, B) -> Tuple[Array, Array]:
  """``(speeds, V)`` with ``A B⁻¹ = V diag(speeds) V⁻¹``.

  ``ζ = V⁻¹ z`` are the wave coordinates: ``∂ζᵢ/∂x = speeds[i] ∂ζᵢ/∂y``.

  Args:
    A, B: ``[C, C]`` matrices, ``B`` invertible.

  Returns:
    ``speeds`` ``[C]`` complex and ``V`` ``[C, C]`` complex (columns are the
    unit-norm eigenvectors).
  """
  return jnp.linalg.eig(_a_times_b_inverse(A, B))


def _directional_residual(z: Array, matrix_t: Array, axis: int, origin: int,
                          step, eps: float) -> Tuple[Array, Array]:
  """Squared residual and squared difference norms along one axis.

  Positions after ``origin`` are compared with their predecessor
  (``z[i] − z[i−1]`` vs ``+s·M ẑ[i−1]``), positions before it with their
  successor (``z[i] − z[i+1]`` vs ``−s·M ẑ[i+1]``): the direction in which
  FINOLA generates the map.
  """
  forward = jnp.diff(z, axis=axis)  # z[i+1] - z[i], i = 0..n-2
  n = z.shape[axis]
  source_prev = jax.lax.slice_in_dim(z, 0, n - 1, axis=axis)
  source_next = jax.lax.slice_in_dim(z, 1, n, axis=axis)
  predicted_forward = step * (core.normalize(source_prev, eps) @ matrix_t)
  predicted_backward = -step * (core.normalize(source_next, eps) @ matrix_t)
  # Difference i (between i and i+1) belongs to the forward walk when
  # i >= origin, to the backward walk (z[i] - z[i+1]) when i < origin.
  index = jnp.arange(n - 1).reshape((n - 1,) + (1,) * (-axis - 1))
  after = index >= origin
  delta = jnp.where(after, forward, -forward)
  predicted = jnp.where(after, predicted_forward, predicted_backward)
  batch_axes = (-3, -2, -1)
  return (jnp.sum(jnp.square(delta - predicted), axis=batch_axes),
          jnp.sum(jnp.square(delta), axis=batch_axes))


def pde_residual(z, A, B, *, origin: Optional[Tuple[int, int]] = None,
                 step=1.0, eps: float = 1e-6) -> Tuple[Array, Array]:
  """Relative residuals of the discrete FINOLA equations over a map.

  A diagnostic: how far a feature map ``z`` is from satisfying
  ``Δx z = s·A ẑ`` and ``Δy z = s·B ẑ``, with differences taken away from
  ``origin`` (the direction of generation)::

      r_x = ‖Δx z − s·A ẑ‖ / ‖Δx z‖,    r_y = ‖Δy z − s·B ẑ‖ / ‖Δy z‖

  where right of the origin column ``Δx z = z(x) − z(x−1)`` and ``ẑ`` is
  taken at ``x−1``, left of it ``Δx z = z(x) − z(x+1)`` with ``−s`` and ``ẑ``
  at ``x+1`` (likewise rows for ``r_y``); norms are Frobenius over the whole
  map. A map from :func:`finola_jax.unroll` with ``vertical_first`` has
  ``r_x = 0`` (every row was generated horizontally) and ``r_y = 0`` only
  along the origin column; ``r_y`` then measures how far it is from
  satisfying both equations at once, as does either residual for any other
  map (a learned one, or a CNN's). A zero difference gives ratio 0/tiny.

  Args:
    z: ``[..., H, W, C]`` feature map(s).
    A, B: ``[C, C]`` matrices.
    origin: ``(row, column)`` the differences point away from; the centre
      ``(H // 2, W // 2)`` when ``None``.
    step: step size ``s``.
    eps: normalization epsilon.

  Returns:
    ``(r_x, r_y)``, each of shape ``z.shape[:-3]``; ``r_x`` is 0 when
    ``W == 1`` and ``r_y`` when ``H == 1``.
  """
  z = jnp.asarray(z)
  if z.ndim < 3:
    raise ValueError(f"z must have shape [..., H, W, C], got shape {z.shape}.")
  core._check_floating("z", z)
  core._check_matrices(A, B, z.shape[-1], "z")
  height, width = z.shape[-3], z.shape[-2]
  row, col = core.resolve_origin(height, width, origin)
  A_t, B_t = jnp.asarray(A, z.dtype).T, jnp.asarray(B, z.dtype).T
  tiny = jnp.finfo(z.dtype).tiny

  def relative(matrix_t, axis, start, size):
    if size == 1:
      return jnp.zeros(z.shape[:-3], z.dtype)
    err, norm = _directional_residual(z, matrix_t, axis, start, step, eps)
    return jnp.sqrt(err) / jnp.maximum(jnp.sqrt(norm), tiny)

  return relative(A_t, -2, col, width), relative(B_t, -3, row, height)


# --------------------------------------------------------------------------
# Watching the unroll: how large the maps get and what in A and B lets them.
# A step adds s·A ẑ with |ẑ| = √C whatever |z| is; with u the centred part
# of z, |u|² grows along a walk while ẑᵀAẑ + |Aẑ|²/(2σ) > 0, so the largest
# eigenvalue of A's symmetric part says whether |z| can settle.


def map_statistics(maps, origin: Optional[Tuple[int, int]] = None) -> dict:
  """Sizes of unrolled maps: ``max_abs_z``, ``mean_abs_z``, ``edge_to_centre``.

  Per map (each ``[H, W, C]`` slice), averaged over the maps: ``max_abs_z``
  is its largest ``|z|``; ``edge_to_centre`` is its mean ``|z|`` over the
  border cells divided by its mean ``|z|`` at the origin (where ``q``
  sits): above 1 the map grows away from ``q``. ``mean_abs_z`` is the mean
  ``|z|`` of every entry. Means over maps make the values of a batch the
  mean of its shards' values (``pmean`` over devices gives the global one).

  A diagnostic, not differentiable: take it of ``stop_gradient(maps)``
  inside a differentiated function.

  Args:
    maps: ``[..., H, W, C]`` maps (any leading axes: batch, paths).
    origin: ``(row, column)`` of ``q``; the centre ``(H // 2, W // 2)``
      when ``None``.

  Returns:
    ``{name: float32 scalar}``.
  """
  # One reduction over C reads each entry once, giving per cell both the sum
  # and the largest |z| in float32 (exact for bfloat16). Separate reductions
  # made XLA:CPU write out a copy of the maps to feed them: 3.7 GiB more
  # temporaries in the paper's step at batch 32.
  maps = jnp.asarray(maps)
  height, width = maps.shape[-3:-1]
  row, col = core.resolve_origin(height, width, origin)
  border = jnp.ones((height, width), bool).at[1:-1, 1:-1].set(False)
  magnitude = jnp.abs(maps).astype(jnp.float32)
  total, largest = jax.lax.reduce(
      (magnitude, magnitude), (jnp.float32(0), jnp.float32(0)),
      lambda x, y: (x[0] + y[0], jnp.maximum(x[1], y[1])), (maps.ndim - 1,))
  per_cell = total / maps.shape[-1]
  edge = jnp.sum(per_cell * border, axis=(-2, -1)) / jnp.sum(border)
  return {"max_abs_z": jnp.mean(jnp.max(largest, axis=(-2, -1))),
          "mean_abs_z": jnp.mean(per_cell),
          "edge_to_centre": jnp.mean(edge / per_cell[..., row, col])}


def matrix_statistics(A, B) -> dict:
  """Spectral norms of ``A``, ``B`` and the top eigenvalue of their symmetric parts.

  Keys ``A_spectral_norm``, ``B_spectral_norm`` (largest singular value),
  ``A_symmetric_max_eig``, ``B_symmetric_max_eig`` (largest eigenvalue of
  ``(M + Mᵀ)/2``). Stacked ``[P, C, C]`` matrices (one pair per path) give
  the largest over the paths.

  Args:
    A, B: ``[C, C]`` or ``[P, C, C]`` matrices.

  Returns:
    ``{name: float32 scalar}``.
  """
  result = {}
  for name, matrix in (("A", A), ("B", B)):
    matrix = jnp.asarray(matrix).astype(jnp.float32)
    if matrix.ndim not in (2, 3) or matrix.shape[-1] != matrix.shape[-2]:
      raise ValueError(f"{name} must be [C, C] or [P, C, C], got shape "
                       f"{matrix.shape}.")
    singular = jnp.linalg.svd(matrix, compute_uv=False)
    symmetric = 0.5 * (matrix + jnp.swapaxes(matrix, -1, -2))
    result[f"{name}_spectral_norm"] = jnp.max(singular)
    result[f"{name}_symmetric_max_eig"] = jnp.max(jnp.linalg.eigvalsh(symmetric))
  return result
