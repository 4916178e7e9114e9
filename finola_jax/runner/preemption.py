# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Preemption: the step at which every process saves and stops after SIGTERM.

Preemptible TPU VMs, spot GPUs and SLURM's time limit send SIGTERM some
seconds before they stop a job. The trainer asks :meth:`Notice.reached` at
every step; once it is true, it saves a checkpoint at that step and stops
(:class:`Preempted`), and the same command resumes the run there.

* Several processes must save the same step (orbax's save is collective).
  ``jax.distributed.initialize`` starts JAX's preemption service, whose own
  SIGTERM handler tells the coordination service; the processes agree on a
  step after the latest any of them has reached
  (``multihost_utils.reached_preemption_sync_point``, through
  ``CheckpointManager.reached_preemption``), which every process must ask at
  every step from the same start. No Python handler is installed: it would
  replace JAX's.
* A single process has no such service: a SIGTERM handler sets a flag,
  which the next step reads.
"""

from __future__ import annotations

import signal
import threading

import jax
import orbax.checkpoint as ocp


class Preempted(Exception):
  """A preemption notice stopped training after saving the step ``step``."""

  def __init__(self, step: int, directory):
    super().__init__(
        f"Preempted: saved the checkpoint at step {step} in {directory}; the "
        "same command resumes the run from there.")
    self.step = step


class Notice:
  """Context manager: whether a preemption notice has reached a step.

  Single-process: installs a SIGTERM handler while entered (from the main
  thread; elsewhere Python cannot handle signals and SIGTERM keeps its
  default) and restores the previous handler on exit.
  """

  def __init__(self, manager: ocp.CheckpointManager):
    self._manager = manager
    self._multiprocess = jax.process_count() > 1
    self._signalled = False
    self._previous = None

  def _handle(self, signum, frame):
    del signum, frame
    self._signalled = True

  def __enter__(self) -> "Notice":
    if (not self._multiprocess
        and threading.current_thread() is threading.main_thread()):
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def __exit__(self, *exc_info) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None

  def reached(self, step: int) -> bool:
    """Whether to save at ``step`` and stop; ask at every step, every process."""
    if self._multiprocess:
      return self._manager.reached_preemption(step)
    return self._signalled
