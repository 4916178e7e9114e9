# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Array helpers below the walks and the models: normalization, storage view.

* :func:`normalize_parts` / :func:`normalize`: FINOLA's normalization
  ``ẑ = (z − mean(z)) · rsqrt(var(z) + eps)`` over the last axis
  (population variance, no affine), the one definition every walk uses.
* The *storage view*, one rule for every loop that slices or updates a
  16-bit float array with ``dynamic_slice`` / ``dynamic_update_slice``:
  when the computation is **lowered for CPU**, such arrays cross the loop as
  ``uint16`` (a free bitcast); on every other platform they stay in their
  dtype. XLA's CPU backend has no bfloat16/float16 dynamic-slice or
  dynamic-update-slice and converts the whole operand to float32: every
  write of a walk would pass over the whole canvas, and the walks' backward
  would hoist float32 copies of canvas and cotangent out of its loop (4×
  the map's bytes). GPUs and TPUs slice 16-bit floats in place. The
  platform is the one the computation is lowered for
  (``jax.lax.platform_dependent``), not ``jax.default_backend()``.
  An integer view has no derivative, so derivatives (any order, forward or
  reverse) are those of the same function without the view.
"""

from __future__ import annotations

import functools
from typing import Callable, Tuple, TypeVar

import jax
import jax.numpy as jnp

Array = jax.Array
T = TypeVar("T")

STORAGE_DTYPE = jnp.dtype(jnp.uint16)


def normalize_parts(z: Array, eps: float) -> Tuple[Array, Array]:
  """``(z − μ, r)`` with ``ẑ = (z − μ)·r``, ``r = rsqrt(var + eps)``.

  Args:
    z: ``[..., C]`` floating array.
    eps: added to the population variance over ``C``.

  Returns:
    ``[..., C]`` centred values and ``[..., 1]`` reciprocal deviations, in
    ``z``'s dtype.
  """
  centred = z - jnp.mean(z, axis=-1, keepdims=True)
  var = jnp.mean(jnp.square(centred), axis=-1, keepdims=True)
  return centred, jax.lax.rsqrt(var + jnp.asarray(eps, z.dtype))


def normalize(z: Array, eps: float) -> Array:
  """``ẑ = (z − mean(z)) · rsqrt(var(z) + eps)`` over the last axis."""
  centred, r = normalize_parts(z, eps)
  return centred * r


def is_16_bit_float(dtype) -> bool:
  """Whether arrays of ``dtype`` take the storage view on CPU."""
  dtype = jnp.dtype(dtype)
  return jnp.issubdtype(dtype, jnp.floating) and dtype.itemsize == 2


def to_storage(x: Array, view: bool) -> Array:
  """``x`` as ``uint16`` bits when ``view`` and ``x`` is a 16-bit float."""
  if view and is_16_bit_float(x.dtype):
    return jax.lax.bitcast_convert_type(x, STORAGE_DTYPE)
  return x


def from_storage(x: Array, dtype) -> Array:
  """Undoes :func:`to_storage`: ``x`` back in ``dtype``."""
  if x.dtype != jnp.dtype(dtype):
    return jax.lax.bitcast_convert_type(x, dtype)
  return x


def with_storage_view(function: Callable[..., T], dtype, *args) -> T:
  """``function(*args, view=...)`` with the storage view's one rule.

  ``view`` is True when ``dtype`` is a 16-bit float and the computation is
  lowered for CPU, False otherwise (see the module docstring); ``function``
  passes it to :func:`to_storage`. Differentiating the result (any order,
  either mode) differentiates ``function(*args, view=False)``.

  Args:
    function: takes ``*args`` (arrays or pytrees of arrays) and ``view``;
      its value must not depend on ``view`` (the view is a bitcast).
    dtype: the dtype of the arrays ``function`` stores.
    *args: its array arguments.

  Returns:
    ``function(*args, view=...)``.
  """
  plain = functools.partial(function, view=False)
  if not is_16_bit_float(dtype):
    return plain(*args)
  viewed = functools.partial(function, view=True)

  @jax.custom_jvp
  def call(*call_args):
    return jax.lax.platform_dependent(*call_args, cpu=viewed, default=plain)

  @call.defjvp
  def call_jvp(primals, tangents):
    return jax.jvp(plain, primals, tangents)

  return call(*args)
