# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Orbax checkpoints of a host-side (unreplicated) train state.

A checkpoint that cannot be read (files truncated by a killed copy or a full
disk) does not stop a run: restoring falls back to the newest readable one,
with a warning naming the bad step. A resumed run moves the bad checkpoint to
``WORKDIR/checkpoints_unreadable/STEP`` (never deleting it), so that it can
save that step again.
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

import jax
import orbax.checkpoint as ocp
from absl import logging
from etils import epath


class UnreadableCheckpointError(RuntimeError):
  """Every checkpoint of a workdir failed to restore."""


def absolute(path: str) -> epath.Path:
  """``path`` made absolute; a ``gs://`` (or other URL) path as it is."""
  # absolute() would make gs://bucket/... a local path.
  return epath.Path(path) if "://" in str(path) else epath.Path(path).absolute()


def checkpoint_dir(workdir: str) -> epath.Path:
  return absolute(workdir) / "checkpoints"


def unreadable_dir(workdir: str) -> epath.Path:
  """Where a resumed run moves the checkpoints it cannot read."""
  return absolute(workdir) / "checkpoints_unreadable"


def create_manager(workdir: str, keep: int = 3,
                   read_only: bool = False) -> ocp.CheckpointManager:
  """A ``CheckpointManager`` over ``WORKDIR/checkpoints``.

  Every process must create it and call ``save``: orbax coordinates the
  processes and writes from the primary one. Saves are atomic (written to a
  temporary directory, then renamed), so a run killed mid-save leaves the
  previous checkpoints intact. They are synchronous: orbax 0.12's
  asynchronous saves can fail on a loaded machine with "Checkpoint directory
  does not exist: ...orbax-checkpoint-tmp" (its metadata thread races the
  rename).
  """
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=not read_only,
                                         read_only=read_only,
                                         enable_async_checkpointing=False)
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options)


def save(manager: ocp.CheckpointManager, step: int, state: Any) -> None:
  """Saves a host-side state (the trainer saves only steps it found finite)."""
  manager.save(step, args=ocp.args.StandardSave(jax.device_get(state)))


def restore_newest_readable(
    manager: ocp.CheckpointManager,
    target: Any = None) -> Tuple[Optional[int], Any, List[int]]:
  """Restores the newest checkpoint that can be read.

  Args:
    manager: over the checkpoints.
    target: the state's structure, shapes and dtypes (e.g. from
      ``jax.eval_shape``); ``None`` restores the tree as saved.

  Returns:
    ``(step, state, unreadable)``: ``unreadable`` lists the newer steps that
    failed (each logged as a warning); ``(None, None, [])`` without
    checkpoints.

  Raises:
    UnreadableCheckpointError: no checkpoint could be read.
  """
  args = ocp.args.StandardRestore(target)
  unreadable = []
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      return step, manager.restore(step, args=args), unreadable
    except Exception as error:  # pylint: disable=broad-except
      # Truncated files fail in tensorstore (ValueError: OUT_OF_RANGE),
      # truncated metadata in json, missing files in the file system.
      logging.warning("The checkpoint at step %d in %s is unreadable (%s: %s); "
                      "trying the one before.", step, manager.directory,
                      type(error).__name__, str(error).splitlines()[0][:300])
      unreadable.append(step)
  if unreadable:
    raise UnreadableCheckpointError(
        f"No readable checkpoint in {manager.directory}: the checkpoints at "
        f"steps {unreadable} are all unreadable (see the warnings above); "
        "readable: none.")
  return None, None, []


def set_aside(workdir: str, manager: ocp.CheckpointManager,
              steps: List[int]) -> None:
  """Moves unreadable checkpoints to :func:`unreadable_dir` (all processes)."""
  if not steps:
    return
  if jax.process_index() == 0:
    destination = unreadable_dir(workdir)
    destination.mkdir(parents=True, exist_ok=True)
    for step in steps:
      (checkpoint_dir(workdir) / str(step)).rename(destination / str(step))
  ocp.multihost.sync_global_processes("finola_set_aside_unreadable")
  manager.reload()
  logging.warning("Moved the unreadable checkpoints at steps %s to %s; the "
                  "run saves those steps again.", steps, unreadable_dir(workdir))


def resume(workdir: str, manager: ocp.CheckpointManager,
           target: Any) -> Tuple[Optional[int], Any]:
  """``(step, state)`` of the newest readable checkpoint, ``(None, None)``
  without one; the unreadable newer ones are set aside (:func:`set_aside`)
  so that the resumed run can save those steps again."""
  step, state, unreadable = restore_newest_readable(manager, target)
  set_aside(workdir, manager, unreadable)
  return step, state


def latest_step(workdir: str) -> Optional[int]:
  """The newest saved step in ``workdir`` (readable or not), ``None`` without
  one; reads no checkpoint."""
  if not checkpoint_dir(workdir).exists():
    return None
  manager = create_manager(workdir, read_only=True)
  try:
    return manager.latest_step()
  finally:
    manager.close()


def restore_latest_params(workdir: str, target: Any = None) -> Tuple[int, Any]:
  """``(step, params)`` of the newest readable checkpoint in ``workdir``.

  Args:
    workdir: the run's directory.
    target: the train state's structure, shapes and dtypes (e.g.
      ``step.abstract_train_state``: nothing is initialized); ``None``
      restores the parameters as saved (numpy), which needs no model: for
      reading one part of them (an encoder) into another program.

  Raises:
    FileNotFoundError: no checkpoint in the workdir.
    UnreadableCheckpointError: none of them can be read.
  """
  manager = create_manager(workdir, read_only=True)
  try:
    step, restored, _ = restore_newest_readable(manager, target)
  finally:
    manager.close()
  if step is None:
    raise FileNotFoundError(f"No checkpoint in {checkpoint_dir(workdir)}.")
  return step, (restored["params"] if isinstance(restored, dict)
                else restored.params)
