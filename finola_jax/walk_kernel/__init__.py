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
are int32, so a phase of 2³¹ elements or more runs as several launches over
``P``, one after another (:func:`tuning.launch_size`; walkers of different
``p`` never meet, so the values are those of one launch); one map must fit
(:func:`is_supported` checks it when given ``image_elements``).

Modules
-------
``tuning``: which maps are supported, :class:`KernelConfig`, the cost model
of :func:`default_config` and :func:`candidate_configs`. ``layout``: phases,
lanes and the addressing of canvas, scratch and tiles. ``barriers``: the
group barrier and the per-tile statistics combined across it. ``forward``
and ``backward``: the two kernels and the functions that launch them.
"""

from finola_jax.walk_kernel.backward import grow_backward
from finola_jax.walk_kernel.forward import grow_forward
from finola_jax.walk_kernel.tuning import CHANNEL_MULTIPLE
from finola_jax.walk_kernel.tuning import KernelConfig
from finola_jax.walk_kernel.tuning import MAX_CANVAS_ELEMENTS
from finola_jax.walk_kernel.tuning import MAX_CHANNELS
from finola_jax.walk_kernel.tuning import SUPPORTED_DTYPES
from finola_jax.walk_kernel.tuning import candidate_configs
from finola_jax.walk_kernel.tuning import default_config
from finola_jax.walk_kernel.tuning import is_supported

__all__ = (
    "CHANNEL_MULTIPLE",
    "KernelConfig",
    "MAX_CANVAS_ELEMENTS",
    "MAX_CHANNELS",
    "SUPPORTED_DTYPES",
    "candidate_configs",
    "default_config",
    "grow_backward",
    "grow_forward",
    "is_supported",
)
