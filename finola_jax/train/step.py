# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""The data-parallel steps: ``TrainState``, optimizer, train and eval step.

This module imports jax, flax, optax and ml_collections only — no
TensorFlow, clu or tfds — and neither do ``finola_jax.models`` and
``finola_jax.tasks``: a config's train step can be built, compiled and run
on a machine without the input pipeline::

  task = finola_jax.tasks.create_task(config)
  state = step.create_train_state(task, config)
  steps = step.ParallelSteps(task, config.seed)
  state, metrics = steps.train(steps.replicate(state), batch)

``ParallelSteps`` is the one place the steps are ``jax.pmap``-ed (axis
``"batch"``, gradients ``lax.pmean``-ed, as in flax's ``examples/imagenet``);
batches are ``[local_devices, per_device, ...]``.
"""

from __future__ import annotations

import abc
import functools
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import traverse_util
from flax.training import train_state

Batch = Mapping[str, Any]
Params = Any
AXIS = "batch"
# Evaluation randomness (the masks of masked FINOLA) is keyed by each
# example's index in its split under this seed: the same masks for every
# run, process and device layout.
EVAL_SEED = 1234


class Task(abc.ABC):
  """What differs between experiments; all methods are per device and pure.

  ``finola_jax.tasks.create_task`` builds one from a config.
  """

  @property
  @abc.abstractmethod
  def visualization_columns(self) -> Tuple[str, ...]:
    """Names of the columns ``visualize`` returns, left to right."""

  @abc.abstractmethod
  def init_params(self, rng: jax.Array) -> Params:
    """Fresh parameters (their shapes come from the task's config)."""

  @abc.abstractmethod
  def loss(self, params: Params, batch: Batch,
           example_keys: jax.Array) -> Tuple[jax.Array, Dict[str, jax.Array]]:
    """``(scalar loss, scalar metrics)`` averaged over the per-device batch.

    ``example_keys`` ``[per_device]`` are PRNG keys derived from the seed,
    step and each example's index in the global batch, so randomness does
    not depend on how the batch is split over devices and processes.
    """

  @abc.abstractmethod
  def eval_metrics(self, params: Params, batch: Batch,
                   example_keys: jax.Array) -> Dict[str, jax.Array]:
    """Per-example metrics ``{name: [per_device]}``, averaged by the caller.

    ``example_keys`` come from each example's index in its split
    (``batch["index"]``, see :func:`evaluation_keys`).
    """

  @abc.abstractmethod
  def visualize(self, params: Params, batch: Batch,
                example_keys: jax.Array) -> Sequence[jax.Array]:
    """Columns of ``[b, H, W, 3]`` images (``visualization_columns``)."""

  def optimizer(self, config: ml_collections.ConfigDict
                ) -> optax.GradientTransformation:
    """The optimizer of the task's parameters: `create_optimizer` unless a
    task treats some of them differently (a frozen backbone)."""
    return create_optimizer(config)

  def parameter_metrics(self, params: Params) -> Dict[str, jax.Array]:
    """Scalars computed from the parameters alone, logged with the training
    metrics (the trainer calls it only when it logs); none by default."""
    del params
    return {}


# ``optax.apply_if_finite`` accepts a non-finite gradient after this many in a
# row; never, here: the trainer stops the run at the first one.
_NEVER = np.iinfo(np.int32).max


def create_optimizer(
    config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """AdamW with linear warm-up and cosine decay, after global-norm clipping.

  The FINOLA matrices (the ``"matrices"`` parameters) learn at
  ``config.matrix_learning_rate_scale`` × the others' rate. Adam moves every
  entry of ``A`` by about the learning rate whatever C is, so one step moves
  ``A ẑ`` of a unit-variance ``ẑ`` by up to ``C ×`` that: a rate that trains
  the encoder and decoder can be far too large for ``A`` and ``B`` at large C.
  """
  def adamw(peak: float) -> optax.GradientTransformation:
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=peak,
        warmup_steps=min(config.warmup_steps, max(config.steps - 1, 0)),
        decay_steps=max(config.steps, 1), end_value=0.01 * peak)
    return optax.adamw(schedule, weight_decay=config.weight_decay)

  scale = config.matrix_learning_rate_scale
  if scale == 1:
    update = adamw(config.learning_rate)
  else:
    update = optax.multi_transform(
        {"matrices": adamw(scale * config.learning_rate),
         "others": adamw(config.learning_rate)},
        lambda params: traverse_util.path_aware_map(
            lambda path, _: "matrices" if path[0] == "matrices" else "others",
            params))
  return optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), update)


def create_train_state(task: Task,
                       config: ml_collections.ConfigDict) -> train_state.TrainState:
  """A fresh state: parameters from ``config.seed``, the task's optimizer.

  The optimizer is wrapped in ``optax.apply_if_finite``, the one guard
  against NaN and Inf: a step whose gradients hold one leaves the
  parameters and the inner optimizer state unchanged, and
  ``opt_state.last_finite`` says so (see :func:`train_step`).
  """
  # Jitted: run op by op, initialization compiles every op on its own
  # (about a minute for a small model on a busy CPU).
  params = jax.jit(task.init_params)(jax.random.PRNGKey(config.seed))
  tx = optax.apply_if_finite(task.optimizer(config),
                             max_consecutive_errors=_NEVER)
  return train_state.TrainState.create(apply_fn=None, params=params, tx=tx)


def abstract_train_state(task: Task, config: ml_collections.ConfigDict):
  """The state's shapes and dtypes (``jax.eval_shape``): nothing computed."""
  return jax.eval_shape(functools.partial(create_train_state, task, config))


def _training_keys(seed: int, step: jax.Array, per_device: int) -> jax.Array:
  """One key per example from (seed, step, index in the global batch)."""
  step_key = jax.random.fold_in(jax.random.PRNGKey(seed), step)
  first = jax.lax.axis_index(AXIS) * per_device
  indices = first + jnp.arange(per_device)
  return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(step_key, indices)


def evaluation_keys(indices: jax.Array) -> jax.Array:
  """One key per example from its index in the evaluated split alone."""
  return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(
      jax.random.PRNGKey(EVAL_SEED), indices)


def train_step(state: train_state.TrainState, batch: Batch, *, task: Task,
               seed: int) -> Tuple[train_state.TrainState, Dict[str, jax.Array]]:
  """One optimizer step on one device's batch; run it under ``pmap``.

  Gradients and metrics are averaged over the ``"batch"`` axis. The
  metric ``finite`` is 1 when the loss, the gradients and the updated
  parameters are all free of NaN and Inf, else 0: the trainer stops the run
  at such a step, before saving it. Non-finite gradients are not applied
  (``optax.apply_if_finite``, :func:`create_optimizer`).
  """
  per_device = jax.tree_util.tree_leaves(batch)[0].shape[0]
  keys = _training_keys(seed, state.step, per_device)
  (loss, metrics), grads = jax.value_and_grad(task.loss, has_aux=True)(
      state.params, batch, keys)
  grads = jax.lax.pmean(grads, AXIS)
  metrics = jax.lax.pmean(dict(metrics, loss=loss), AXIS)
  new_state = state.apply_gradients(grads=grads)
  finite = (jnp.isfinite(metrics["loss"]) & new_state.opt_state.last_finite
            & all_finite(new_state.params))
  metrics["finite"] = finite.astype(jnp.float32)
  return new_state, metrics


def all_finite(tree) -> jax.Array:
  """Whether no leaf of ``tree`` holds a NaN or Inf (a boolean scalar)."""
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf))
                            for leaf in jax.tree_util.tree_leaves(tree)]))


def eval_step(params: Params, batch: Batch, *,
              task: Task) -> Dict[str, jax.Array]:
  """Masked sums of per-example metrics over all devices (``psum``).

  ``batch`` holds ``image``, ``index`` (in the split) and ``mask`` (0 for
  padding examples).
  """
  mask = batch["mask"]
  metrics = task.eval_metrics(params, batch, evaluation_keys(batch["index"]))
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
    self.visualize = jax.jit(lambda params, batch: task.visualize(
        params, batch, evaluation_keys(batch["index"])))
    self._parameter_metrics = jax.jit(task.parameter_metrics)
    mesh = jax.sharding.Mesh(np.array(self.devices), (AXIS,))
    self._replicated = jax.sharding.NamedSharding(
        mesh, jax.sharding.PartitionSpec(AXIS))

  def parameter_metrics(self, params) -> Dict[str, float]:
    """``task.parameter_metrics`` of replicated ``params``, as floats.

    Computed on the first device's copy: only the scalars reach the host.
    """
    first = jax.tree_util.tree_map(lambda x: x.addressable_shards[0].data[0],
                                   params)
    return {k: float(v) for k, v in
            jax.device_get(self._parameter_metrics(first)).items()}

  def replicate(self, tree):
    """One copy of ``tree`` per device, laid out as the steps' outputs are.

    ``flax.jax_utils.replicate`` lays arrays out on another mesh, so the
    first step would be traced and compiled twice.
    """
    count = len(self.devices)
    return jax.device_put(jax.tree_util.tree_map(
        lambda x: np.broadcast_to(np.asarray(x), (count,) + np.shape(x)), tree),
        self._replicated)


def unreplicate(tree):
  """One copy of a replicated tree, on the host.

  Reads this process's first shard only (``flax.jax_utils.unreplicate``
  keeps the device axis of a tree replicated over fewer than all local
  devices).
  """
  return jax.device_get(jax.tree_util.tree_map(
      lambda x: x.addressable_shards[0].data[0], tree))
