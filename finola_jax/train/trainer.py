# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""The one trainer every experiment runs on.

An experiment is a :class:`Task` — model, loss, evaluation metrics and
pictures; this module owns everything else: the ``TrainState``, the
data-parallel step (``jax.pmap`` over local devices with ``lax.pmean`` of
gradients, as in flax's ``examples/imagenet``), the optimizer, the NaN/Inf
guard, orbax checkpoints with automatic resume, and the CLU metric writers.
Batches are ``[local_devices, per_device, ...]``; only process 0 writes
summaries and images, while every process takes part in checkpointing.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import itertools
import json
import os
import time
from typing import Any, Callable, Dict, Iterable, Iterator, Mapping, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from clu import periodic_actions
from etils import epath
from flax import jax_utils
from flax.training import train_state

from finola_jax.train import checkpointing
from finola_jax.train import writers

Batch = Mapping[str, np.ndarray]
Params = Any
AXIS = "batch"


class Task(abc.ABC):
  """What differs between experiments. All methods are per device and pure."""

  @abc.abstractmethod
  def init_params(self, rng: jax.Array, batch: Batch) -> Params:
    """Parameters for a per-device batch (``[per_device, ...]`` arrays)."""

  @abc.abstractmethod
  def loss(self, params: Params, batch: Batch,
           example_keys: jax.Array) -> Tuple[jax.Array, Dict[str, jax.Array]]:
    """``(scalar loss, scalar metrics)`` averaged over the per-device batch.

    ``example_keys`` ``[per_device]`` are PRNG keys derived from the seed,
    step and each example's index in the global batch, so randomness does
    not depend on how the batch is split over devices and processes.
    """

  @abc.abstractmethod
  def eval_metrics(self, params: Params, batch: Batch) -> Dict[str, jax.Array]:
    """Per-example metrics ``{name: [per_device]}``, averaged by the caller."""

  @abc.abstractmethod
  def visualize(self, params: Params, batch: Batch) -> Sequence[jax.Array]:
    """Columns of ``[b, H, W, 3]`` images to tile side by side in a grid."""

  @abc.abstractmethod
  def describe(self) -> Dict[str, Any]:
    """The settings a checkpoint depends on; a resumed run must match them."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Optimization and bookkeeping settings shared by all experiments."""
  workdir: str
  steps: int
  batch_size: int  # global, over all processes and devices
  learning_rate: float = 1e-3
  warmup_steps: int = 100
  weight_decay: float = 1e-4
  grad_clip_norm: float = 1.0
  log_every: int = 50
  eval_every: int = 500
  checkpoint_every: int = 500
  keep_checkpoints: int = 3
  seed: int = 0
  num_images: int = 8


class NonFiniteError(FloatingPointError):
  """Raised when a step produces a NaN or Inf loss or gradient."""


def create_optimizer(config: TrainConfig) -> optax.GradientTransformation:
  """AdamW with linear warm-up and cosine decay, after global-norm clipping."""
  schedule = optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=config.learning_rate,
      warmup_steps=min(config.warmup_steps, max(config.steps - 1, 0)),
      decay_steps=max(config.steps, 1), end_value=0.01 * config.learning_rate)
  return optax.chain(optax.clip_by_global_norm(config.grad_clip_norm),
                     optax.adamw(schedule, weight_decay=config.weight_decay))


def create_train_state(task: Task, config: TrainConfig,
                       batch: Batch) -> train_state.TrainState:
  """A fresh state; ``batch`` is one device's share (``[per_device, ...]``)."""
  # Jitted: run op by op, initialization compiles every op on its own
  # (about a minute for a small model on a busy CPU).
  params = jax.jit(task.init_params)(jax.random.PRNGKey(config.seed), batch)
  return train_state.TrainState.create(apply_fn=None, params=params,
                                       tx=create_optimizer(config))


def _example_keys(seed: int, step: jax.Array, per_device: int) -> jax.Array:
  """One key per example from (seed, step, index in the global batch)."""
  step_key = jax.random.fold_in(jax.random.PRNGKey(seed), step)
  first = jax.lax.axis_index(AXIS) * per_device
  indices = first + jnp.arange(per_device)
  return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(step_key, indices)


def train_step(state: train_state.TrainState, batch: Batch, *, task: Task,
               seed: int) -> Tuple[train_state.TrainState, Dict[str, jax.Array]]:
  """One optimizer step on one device's batch; run it under ``pmap``.

  Gradients and metrics are averaged over the ``"batch"`` axis. A step
  whose loss or gradients are not finite leaves the state unchanged and
  reports ``finite = 0``.
  """
  per_device = jax.tree_util.tree_leaves(batch)[0].shape[0]
  keys = _example_keys(seed, state.step, per_device)
  (loss, metrics), grads = jax.value_and_grad(task.loss, has_aux=True)(
      state.params, batch, keys)
  grads = jax.lax.pmean(grads, AXIS)
  metrics = jax.lax.pmean(dict(metrics, loss=loss), AXIS)
  finite = jnp.isfinite(metrics["loss"]) & jnp.all(jnp.stack(
      [jnp.all(jnp.isfinite(g)) for g in jax.tree_util.tree_leaves(grads)]))
  updated = state.apply_gradients(grads=grads)
  new_state = jax.tree_util.tree_map(
      lambda new, old: jnp.where(finite, new, old), updated, state)
  metrics["finite"] = finite.astype(jnp.float32)
  return new_state, metrics


def eval_step(params: Params, batch: Batch, *,
              task: Task) -> Dict[str, jax.Array]:
  """Masked sums of per-example metrics over all devices (``psum``)."""
  mask = batch["mask"]
  metrics = task.eval_metrics(params, batch)
  sums = {k: jnp.sum(v * mask) for k, v in metrics.items()}
  sums["count"] = jnp.sum(mask)
  return jax.lax.psum(sums, AXIS)


class ParallelSteps:
  """The ``pmap``-ed step functions: the one place the parallel wrapper lives.

  ``devices`` (default: every device of every process; if given, the same
  list in every process, as ``jax.pmap`` requires) are the ones the steps
  run on; batches and replicated trees have one leading entry per device of
  this process (``self.devices``). Passing only local devices would make each
  process of a multi-process run train on its own, without averaging.
  """

  def __init__(self, task: Task, seed: int,
               devices: Optional[Sequence[jax.Device]] = None):
    self.task = task
    self.devices = [d for d in (jax.devices() if devices is None else devices)
                    if d.process_index == jax.process_index()]
    self.train = jax.pmap(functools.partial(train_step, task=task, seed=seed),
                          axis_name=AXIS, donate_argnums=(0,), devices=devices)
    self.eval = jax.pmap(functools.partial(eval_step, task=task),
                         axis_name=AXIS, devices=devices)
    self.visualize = jax.jit(task.visualize)
    mesh = jax.sharding.Mesh(np.array(self.devices), (AXIS,))
    self._replicated = jax.sharding.NamedSharding(
        mesh, jax.sharding.PartitionSpec(AXIS))

  def replicate(self, tree):
    """One copy of ``tree`` per device, laid out as the steps' outputs are.

    ``flax.jax_utils.replicate`` lays arrays out on another mesh, so the
    first step would be traced and compiled twice.
    """
    count = len(self.devices)
    return jax.device_put(jax.tree_util.tree_map(
        lambda x: np.broadcast_to(np.asarray(x), (count,) + np.shape(x)), tree),
        self._replicated)


def evaluate(steps: ParallelSteps, params,
             batches: Iterable[Batch]) -> Dict[str, float]:
  """Means of the task's eval metrics over every (unpadded) example.

  ``params`` are replicated; ``batches`` are ``[local_devices, per_device,
  ...]`` with a ``mask`` marking real examples. The sums are ``psum``-ed over
  all devices of all processes, so every process gets the global means.
  """
  totals: Dict[str, float] = {}
  for batch in batches:
    sums = jax.device_get(jax_utils.unreplicate(steps.eval(params, batch)))
    for key, value in sums.items():
      totals[key] = totals.get(key, 0.0) + float(value)
  count = totals.pop("count", 0.0)
  if count == 0:
    raise ValueError("Evaluation got no examples.")
  return {key: value / count for key, value in totals.items()}


def pad_to_device_batches(images: np.ndarray, global_batch_size: int) -> Iterator[Batch]:
  """Splits ``[N, ...]`` arrays held by every process into device batches.

  Every process holds the same ``images``; process ``p`` takes its share of
  each global batch, padded with zeros (``mask = 0``) to a full batch.
  """
  local_devices = jax.local_device_count()
  per_process = global_batch_size // jax.process_count()
  per_device = per_process // local_devices
  for start in range(0, len(images), global_batch_size):
    chunk = images[start:start + global_batch_size]
    mask = np.zeros(global_batch_size, np.float32)
    mask[:len(chunk)] = 1.0
    padded = np.zeros((global_batch_size,) + images.shape[1:], images.dtype)
    padded[:len(chunk)] = chunk
    first = jax.process_index() * per_process
    own = slice(first, first + per_process)
    yield {"image": padded[own].reshape((local_devices, per_device) + images.shape[1:]),
           "mask": mask[own].reshape(local_devices, per_device)}


def first_examples(batch: Batch, count: int) -> Batch:
  """The first ``count`` real examples of a device batch, flattened."""
  flat = {k: np.asarray(v).reshape((-1,) + np.shape(v)[2:]) for k, v in batch.items()}
  real = flat["mask"] > 0 if "mask" in flat else slice(None)
  return {k: v[real][:count] for k, v in flat.items() if k != "mask"}


def write_image_grid(steps: ParallelSteps, params, batch: Batch, *, writer,
                     workdir: str, step: int, tag: str, count: int) -> Optional[str]:
  """Writes the task's picture of ``batch`` as a PNG and a TensorBoard image.

  ``writer`` may be ``None`` (PNG only). Returns the PNG's path (on process
  0; ``None`` elsewhere).
  """
  examples = first_examples(batch, count)
  columns = jax.device_get(steps.visualize(jax_utils.unreplicate(params), examples))
  grid = writers.image_grid(columns)
  if writer is not None:
    writer.write_images(step, {tag: grid[None]})
  if jax.process_index() != 0:
    return None
  path = os.path.join(workdir, "images", f"{tag}_{step:07d}.png")
  writers.save_png(path, grid)
  return path


def describe_module(module) -> Dict[str, Any]:
  """A flax module's settings, minus compute dtype (checkpoints hold float32)."""
  return {f.name: getattr(module, f.name) for f in dataclasses.fields(module)
          if f.name not in ("parent", "name", "dtype")}


def check_run_config(workdir: str, description: Mapping[str, Any],
                     write: bool = True) -> None:
  """Refuses to resume a workdir whose checkpoints belong to another model.

  The first run writes ``WORKDIR/config.json`` (unless ``write`` is false);
  later runs in the same workdir must describe the same model, or orbax
  would fail deep inside a restore with a shape mismatch.
  """
  path = epath.Path(workdir) / "config.json"
  description = json.loads(json.dumps(dict(description)))
  if path.exists():
    saved = json.loads(path.read_text())
    diffs = {k: (saved.get(k), v) for k, v in description.items()
             if saved.get(k) != v}
    if diffs:
      listed = ", ".join(f"{k}: saved {a!r} vs now {b!r}" for k, (a, b) in diffs.items())
      raise ValueError(
          f"--workdir={workdir} holds a run with other settings ({listed}). "
          "Use a new --workdir, or the same settings to resume.")
  elif write and jax.process_index() == 0:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written whole, then renamed: the other processes, checking at the same
    # time, see either no file or the complete one.
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(description, indent=2, sort_keys=True))
    temporary.rename(path)


def restore_params(task: Task, config: TrainConfig,
                   batch: Batch) -> Tuple[int, Params]:
  """Latest checkpoint's ``(step, params)`` in ``config.workdir``.

  ``batch`` is a device batch, used only for its shapes.
  """
  check_run_config(config.workdir, task.describe(), write=False)
  state = create_train_state(task, config, first_examples(batch, 1))
  manager = checkpointing.create_manager(config.workdir, read_only=True)
  step, restored = checkpointing.restore_latest(manager, state)
  if step is None:
    raise FileNotFoundError(
        f"No checkpoint in {checkpointing.checkpoint_dir(config.workdir)}.")
  return step, restored.params


def train_and_evaluate(
    task: Task, config: TrainConfig,
    train_batches: Callable[[int], Iterator[Batch]],
    eval_batches: Callable[[], Iterable[Batch]],
) -> Dict[str, float]:
  """Trains ``task`` from the latest checkpoint in ``config.workdir`` on.

  Args:
    task: the experiment.
    config: optimization and bookkeeping settings.
    train_batches: ``start_step → iterator`` of ``[local_devices,
      per_device, ...]`` batches, deterministic in the step so that a resumed
      run sees what an uninterrupted one would have.
    eval_batches: a fresh pass over held-out batches (with ``mask``).

  Returns:
    The final evaluation metrics.

  Raises:
    NonFiniteError: a step produced NaN/Inf; nothing non-finite was saved and
      the checkpoints already written are kept.
  """
  check_run_config(config.workdir, task.describe())
  writer = writers.create_writer(config.workdir)
  manager = checkpointing.create_manager(config.workdir, config.keep_checkpoints)
  try:
    example = first_examples(next(iter(eval_batches())), 1)
    start_step, state = checkpointing.restore_latest(
        manager, create_train_state(task, config, example))
    start_step = start_step or 0
    if start_step:
      logging.info("Resuming from the checkpoint at step %d in %s.", start_step,
                   checkpointing.checkpoint_dir(config.workdir))
    steps = ParallelSteps(task, config.seed)
    state = steps.replicate(state)
    train_iter = jax_utils.prefetch_to_device(train_batches(start_step), 2)
    report = periodic_actions.ReportProgress(
        num_train_steps=config.steps, writer=writer, every_steps=config.log_every)
    history, previous = [], None
    for step in range(start_step + 1, config.steps + 1):
      state, metrics = steps.train(state, next(train_iter))
      # The previous step's flag: checking it keeps one step in flight.
      _check_finite(previous, step - 1, manager)
      previous = metrics
      history.append(metrics)
      report(step)
      if step % config.log_every == 0 or step == config.steps:
        _check_finite(metrics, step, manager)
        history = jax.device_get(jax_utils.unreplicate(history))
        writer.write_scalars(step, {
            f"train/{k}": float(np.mean([m[k] for m in history]))
            for k in history[0] if k != "finite"})
        history = []
      if step % config.eval_every == 0 and step != config.steps:
        _evaluate_and_draw(steps, state.params, eval_batches, writer, config, step)
      if step % config.checkpoint_every == 0 or step == config.steps:
        _check_finite(metrics, step, manager)
        checkpointing.save(manager, step, jax_utils.unreplicate(state))
    return _evaluate_and_draw(steps, state.params, eval_batches, writer, config,
                              max(config.steps, start_step))
  finally:
    manager.wait_until_finished()
    manager.close()
    writer.flush()


def _check_finite(metrics, step: int, manager) -> None:
  """Raises :class:`NonFiniteError` if ``metrics`` flag a non-finite step."""
  if metrics is None or float(jax_utils.unreplicate(metrics["finite"])) == 1.0:
    return
  latest = manager.latest_step()
  kept = (f"the checkpoint at step {latest} is kept" if latest is not None
          else "no checkpoint was written")
  raise NonFiniteError(
      f"Non-finite loss or gradient at step {step} (loss="
      f"{float(jax_utils.unreplicate(metrics['loss']))}). Training stopped and "
      f"the state was not updated; {kept}. Try a lower --learning_rate or "
      "--precision=float32.")


def _evaluate_and_draw(steps: ParallelSteps, params, eval_batches, writer,
                       config: TrainConfig, step: int) -> Dict[str, float]:
  batches = iter(eval_batches())
  first = next(batches)  # Drawn below; one pass serves both.
  metrics = evaluate(steps, params, itertools.chain([first], batches))
  writer.write_scalars(step, {f"eval/{k}": v for k, v in metrics.items()})
  path = write_image_grid(steps, params, first, writer=writer,
                          workdir=config.workdir, step=step, tag="eval",
                          count=config.num_images)
  if path:
    logging.info("Wrote %s", path)
  return metrics
