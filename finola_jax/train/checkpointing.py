# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Orbax checkpoints of a host-side (unreplicated) train state."""

from __future__ import annotations

import os
from typing import Any, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp


def checkpoint_dir(workdir: str) -> str:
  if "://" in workdir:  # gs://bucket/...: abspath would make it a local path
    return workdir.rstrip("/") + "/checkpoints"
  return os.path.join(os.path.abspath(workdir), "checkpoints")


def create_manager(workdir: str, keep: int = 3,
                   read_only: bool = False) -> ocp.CheckpointManager:
  """A ``CheckpointManager`` over ``WORKDIR/checkpoints``.

  Every process must create it and call ``save``: orbax coordinates the
  processes and writes from the primary one. Saves are atomic (written to a
  temporary directory, then renamed), so a run killed mid-save leaves the
  previous checkpoints intact. They are synchronous: with orbax 0.12's
  asynchronous saves, a loaded machine occasionally failed a save with
  "Checkpoint directory does not exist: ...orbax-checkpoint-tmp" (its
  metadata thread racing the rename).
  """
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=not read_only,
                                         read_only=read_only,
                                         enable_async_checkpointing=False)
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options)


def all_finite(tree) -> bool:
  """Whether every floating leaf of ``tree`` is free of NaN and Inf."""
  leaves = jax.tree_util.tree_leaves(tree)
  return all(bool(np.all(np.isfinite(leaf))) for leaf in leaves
             if np.issubdtype(np.asarray(leaf).dtype, np.floating))


def save(manager: ocp.CheckpointManager, step: int, state: Any) -> None:
  """Saves a host-side state; refuses non-finite values."""
  state = jax.device_get(state)
  if not all_finite(state):
    raise FloatingPointError(
        f"Refusing to save a non-finite state at step {step}.")
  manager.save(step, args=ocp.args.StandardSave(state))


def restore_latest(manager: ocp.CheckpointManager,
                   target: Any) -> tuple[Optional[int], Any]:
  """Restores the latest checkpoint into ``target``'s structure.

  Returns ``(step, state)``, or ``(None, target)`` when there is none.
  """
  step = manager.latest_step()
  if step is None:
    return None, target
  abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct,
                                    jax.device_get(target))
  return step, manager.restore(step, args=ocp.args.StandardRestore(abstract))


def restore_latest_params(workdir: str) -> tuple[int, Any]:
  """``(step, params)`` of the latest checkpoint, as saved (numpy arrays).

  Needs no model: for reading one part of the parameters (an encoder)
  into another program.
  """
  manager = create_manager(workdir, read_only=True)
  step = manager.latest_step()
  if step is None:
    raise FileNotFoundError(f"No checkpoint in {checkpoint_dir(workdir)}.")
  restored = manager.restore(step, args=ocp.args.StandardRestore())
  manager.close()
  return step, restored["params"]
