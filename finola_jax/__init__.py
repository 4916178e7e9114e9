# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""finola_jax: FINOLA (First-Order Norm+Linear Autoregression) in JAX.

Every image, in a learned latent space, is a first-order autoregression::

    z(x+1, y) = z(x, y) + A ẑ(x, y)
    z(x, y+1) = z(x, y) + B ẑ(x, y)
    ẑ = (z − mean(z)) / sqrt(var(z) + eps)     # over the C channels

This package holds the autoregression and its PDE analysis as pure JAX
functions; it imports only jax and numpy (the fused Pallas kernel,
``finola_jax.walk_kernel``, is imported when a walk first uses it). The
training stack (extra ``[train]``) lives in ``finola_jax.train`` (the step,
config checks, checkpoints, writers), ``finola_jax.models``,
``finola_jax.tasks``, ``finola_jax.data`` and ``finola_jax.runner`` (the
training loop and the programs' flags).
"""

from finola_jax.core import CORNERS
from finola_jax.core import PATHS
from finola_jax.core import extrapolate
from finola_jax.core import extrapolate_paths
from finola_jax.core import normalize
from finola_jax.core import select_implementation
from finola_jax.core import unroll
from finola_jax.core import unroll_paths
from finola_jax.wave import map_statistics
from finola_jax.wave import matrix_statistics
from finola_jax.wave import pde_residual
from finola_jax.wave import wave_basis
from finola_jax.wave import wave_speeds

__version__ = "0.1.0"

__all__ = (
    "CORNERS",
    "PATHS",
    "extrapolate",
    "extrapolate_paths",
    "map_statistics",
    "matrix_statistics",
    "normalize",
    "pde_residual",
    "select_implementation",
    "unroll",
    "unroll_paths",
    "wave_basis",
    "wave_speeds",
)
