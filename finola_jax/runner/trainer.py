# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""The training loop every experiment runs, and checkpoint evaluation.

An experiment is a config (``experiments/configs/``) whose ``task`` names a
:class:`~finola_jax.train.step.Task`; :func:`train_and_evaluate` builds the
task, the input pipeline and the state from it, and owns everything around
the steps of ``finola_jax.train.step``: ``WORKDIR/config.json``, orbax
checkpoints with automatic resume, the NaN/Inf check, a checkpoint and a
clean stop on preemption (SIGTERM, ``preemption``), streaming evaluation,
and the CLU metric writers and pictures (process 0 writes them; every
process takes part in checkpointing).
"""

from __future__ import annotations

import functools
import itertools
import json
import os
from typing import Callable, Dict, Iterable, Iterator, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from clu import periodic_actions
from etils import epath
from flax import jax_utils
from jax.experimental import multihost_utils

from finola_jax import tasks
from finola_jax.data import input_pipeline
from finola_jax.data import sources
from finola_jax.models import autoencoder
from finola_jax.runner import preemption
from finola_jax.tasks import reconstruction
from finola_jax.train import checkpointing
from finola_jax.train import run_config
from finola_jax.train import step as step_lib
from finola_jax.train import writers

Batch = step_lib.Batch
BatchesFn = Callable[[], Iterable[Batch]]


class NonFiniteError(FloatingPointError):
  """Raised when a step produces a NaN or Inf loss, gradient or parameter."""


def train_batches_fn(config: ml_collections.ConfigDict
                     ) -> Callable[[int], Iterator[Batch]]:
  """``start_step → `` the config's training batches from that step on."""
  return lambda start_step: input_pipeline.create_train_iterator(
      config.dataset, image_size=config.image_size,
      global_batch_size=config.batch_size, seed=config.seed,
      start_step=start_step, data_dir=config.data_dir,
      colour_augmentation=config.colour_augmentation,
      decode_crop_only=config.decode_crop_only)


def training_crops(config: ml_collections.ConfigDict, count: int) -> np.ndarray:
  """At least ``count`` training crops ``[N, S, S, 3]`` of the config's
  pipeline (with its augmentation): whole global batches from step 0,
  gathered from every process, so any process layout draws the same set."""
  batches = train_batches_fn(config)(0)
  local = [np.asarray(next(batches)["image"])
           for _ in range(-(-count // config.batch_size))]
  local = np.concatenate([b.reshape((-1,) + b.shape[-3:]) for b in local])
  return np.asarray(multihost_utils.process_allgather(local, tiled=True))


def images_of(batches) -> np.ndarray:
  """The real (unpadded) images of evaluation batches: ``[N, S, S, 3]``."""
  return np.concatenate([np.asarray(b["image"]).reshape(
      (-1,) + b["image"].shape[2:])[np.asarray(b["mask"]).reshape(-1) > 0]
                         for b in batches])


# Training crops per PCA component: enough for a stable fit, few enough for
# an SVD of seconds; at most PCA_MAX_VALUES pixel values in all (1 GiB).
PCA_CROPS_PER_COMPONENT = 4
PCA_MAX_VALUES = 2**28


class BaselineScores:
  """What a reconstruction must beat, on the evaluated images.

  ``mean_colour_psnr``: each image as its mean colour; ``pca_psnr``: a PCA
  code of the model's code size (``paths × channels`` numbers), fitted on
  ``PCA_CROPS_PER_COMPONENT`` of the run's training crops per component
  (with its augmentation; fitted once per config and process). Batches are
  scored as they stream past :meth:`observe`, so the model's evaluation and
  the baselines share one pass over the images.
  """

  def __init__(self, config: ml_collections.ConfigDict):
    self._code = _training_pca(
        json.dumps(run_config.to_dict(config), sort_keys=True))
    self._sums: Dict[str, float] = {}
    self._count = 0.0

  def observe(self, batches: Iterable[Batch]) -> Iterator[Batch]:
    """Yields ``batches`` (with ``mask``) unchanged, scoring each."""
    for batch in batches:
      images = np.asarray(batch["image"]).reshape(
          (-1,) + batch["image"].shape[-3:])
      real = np.asarray(batch["mask"]).reshape(-1) > 0
      scores = jax.device_get(reconstruction.baseline_psnr(images, self._code))
      for key, values in scores.items():  # Padding examples may be NaN.
        self._sums[key] = self._sums.get(key, 0.0) + float(np.sum(values[real]))
      self._count += float(real.sum())
      yield batch

  def result(self) -> Dict[str, float]:
    """The means over every process's images (all processes call it)."""
    keys = sorted(self._sums)
    totals = np.sum(multihost_utils.process_allgather(
        np.array([self._sums[k] for k in keys] + [self._count], np.float64)),
                    axis=0)
    return {k: float(v / totals[-1]) for k, v in zip(keys, totals[:-1])}


def baseline_scores(config: ml_collections.ConfigDict,
                    batches: Iterable[Batch]) -> Dict[str, float]:
  """:class:`BaselineScores` of the images of evaluation ``batches``."""
  baselines = BaselineScores(config)
  for _ in baselines.observe(batches):
    pass
  return baselines.result()


@functools.lru_cache(maxsize=4)
def _training_pca(config_json: str) -> reconstruction.PCACode:
  """The PCA code of :func:`baseline_scores` for a config (as JSON)."""
  config = run_config.from_dict(json.loads(config_json))
  components = autoencoder.code_size(config)
  pixels = config.image_size**2 * 3
  count = max(components, min(PCA_CROPS_PER_COMPONENT * components,
                              PCA_MAX_VALUES // pixels))
  return reconstruction.fit_pca(training_crops(config, count), components)


def checked_source(config: ml_collections.ConfigDict,
                   splits: Optional[tuple[str, str]] = None) -> sources.Source:
  """``config.dataset``'s source, checked before a run writes anything (IDX
  and COCO annotation files are read now; the pipelines reuse the cached
  read).

  Args:
    config: its ``dataset`` and ``data_dir`` (if any) choose the source.
    splits: the (training, evaluation) split names, for kinds that take them
      (`sources.from_name`).

  Raises:
    sources.DatasetError: what the user must fix, named.
  """
  try:
    source = sources.from_name(config.dataset, config.get("data_dir"),
                               splits=splits)
    source.check()
  except sources.DatasetError as e:
    raise sources.DatasetError(
        f"config.dataset={config.dataset!r}: {e}") from None
  return source


def validation_batches_fn(config: ml_collections.ConfigDict) -> BatchesFn:
  """A fresh pass over the config's validation split per call."""
  return lambda: input_pipeline.create_eval_iterator(
      config.dataset, image_size=config.image_size,
      global_batch_size=config.batch_size, data_dir=config.data_dir)


def directory_batches_fn(config: ml_collections.ConfigDict,
                         directory: str) -> BatchesFn:
  """A fresh pass over the image files in ``directory`` per call."""
  return lambda: input_pipeline.create_directory_eval_iterator(
      directory, image_size=config.image_size,
      global_batch_size=config.batch_size)


def evaluate(steps: step_lib.ParallelSteps, params,
             batches: Iterable[Batch]) -> Dict[str, float]:
  """Means of the task's eval metrics over every (unpadded) example.

  ``params`` are replicated; ``batches`` are ``[local_devices, per_device,
  ...]`` with ``index`` and ``mask``, consumed as they come (at most two at
  a time): the sums stay on the devices, ``psum``-ed over all devices of all
  processes, so every process gets the global means.
  """
  totals = previous = None
  for batch in batches:
    sums = steps.eval(params, batch)
    totals = sums if totals is None else jax.tree_util.tree_map(
        jnp.add, totals, sums)
    # Dispatch is asynchronous: without waiting, a pipeline faster than the
    # model would queue the whole split in memory. One batch stays in flight.
    jax.block_until_ready(previous)
    previous = totals
  totals = {} if totals is None else step_lib.unreplicate(totals)
  count = float(totals.pop("count", 0.0))
  if count == 0:
    raise ValueError("Evaluation got no examples.")
  return {key: float(value) / count for key, value in totals.items()}


def first_examples(batch: Batch, count: int) -> Batch:
  """The first ``count`` real examples of a device batch, flattened."""
  flat = {k: np.asarray(v).reshape((-1,) + np.shape(v)[2:]) for k, v in batch.items()}
  real = flat["mask"] > 0 if "mask" in flat else slice(None)
  return {k: v[real][:count] for k, v in flat.items() if k != "mask"}


def write_image_grid(steps: step_lib.ParallelSteps, params, batch: Batch, *,
                     writer, workdir: str, step: int, tag: str,
                     count: int) -> Optional[epath.Path]:
  """Draws the task's columns for ``batch``: a PNG and a TensorBoard image.

  The same labelled, enlarged grid (``writers.image_grid``) goes to both;
  ``writer`` may be ``None`` (PNG only). Returns the PNG's path (on process
  0; ``None`` elsewhere).
  """
  examples = first_examples(batch, count)
  columns = jax.device_get(steps.visualize(step_lib.unreplicate(params),
                                           examples))
  grid = writers.image_grid(columns, steps.task.visualization_columns)
  if writer is not None:
    writer.write_images(step, {tag: grid[None]})
  if jax.process_index() != 0:
    return None
  path = epath.Path(workdir) / "images" / f"{tag}_{step:07d}.png"
  writers.save_png(path, grid)
  return path


def evaluation_config(workdir: str, config: Optional[ml_collections.ConfigDict]
                      = None) -> ml_collections.ConfigDict:
  """The config a checkpoint is evaluated with: ``WORKDIR/config.json``.

  A ``config`` given as well must describe the same run (keys other than
  ``run_config.RUNTIME_KEYS`` equal) and is then used as it is.
  """
  saved = run_config.read(workdir)
  if config is None:
    return saved
  run_config.check_same_run(workdir, saved, config,
                            tasks.ADDED_KEY_DEFAULTS)
  return config


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str,
                        batches: BatchesFn, tag: str = "eval") -> Dict[str, float]:
  """Evaluates the newest readable checkpoint on ``batches()``; draws the first.

  Returns the means and the checkpoint's ``step``.
  """
  run_config.check_batch_split(config)
  task = tasks.create_task(config)
  step, params = checkpointing.restore_latest_params(
      workdir, step_lib.abstract_train_state(task, config))
  steps = step_lib.ParallelSteps(task, config.seed)
  replicated = steps.replicate(params)
  iterator = iter(batches())
  first = next(iterator)  # Drawn below; one pass serves both.
  metrics = evaluate(steps, replicated, itertools.chain([first], iterator))
  path = write_image_grid(steps, replicated, first, writer=None,
                          workdir=workdir, step=step, tag=tag,
                          count=config.num_images)
  if path:
    print(f"Checkpoint step {step}; pictures "
          f"({' | '.join(task.visualization_columns)}): {path}", flush=True)
  return dict(metrics, step=step)


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, *,
    task: Optional[step_lib.Task] = None,
    train_batches: Optional[Callable[[int], Iterator[Batch]]] = None,
    eval_batches: Optional[BatchesFn] = None,
) -> Dict[str, float]:
  """Trains ``config``'s task in ``workdir``, from its newest checkpoint on.

  Args:
    config: the experiment (``experiments/configs/``); written to
      ``WORKDIR/config.json`` by a new run, checked against it by a resumed
      one.
    workdir: checkpoints, summaries, pictures; a ``gs://`` path works.
    task: instead of ``finola_jax.tasks.create_task(config)``.
    train_batches: instead of the config's pipeline: ``start_step →
      iterator`` of ``[local_devices, per_device, ...]`` batches,
      deterministic in the step so that a resumed run sees what an
      uninterrupted one would have.
    eval_batches: instead of the config's validation split: a fresh pass
      over held-out batches (with ``index`` and ``mask``) per call.

  Returns:
    The final evaluation metrics.

  Raises:
    ConfigError: an inconsistent config, or one that differs from the
      workdir's run; nothing was written.
    NonFiniteError: a step produced NaN/Inf; nothing non-finite was saved and
      the checkpoints already written are kept.
    preemption.Preempted: a preemption notice (SIGTERM) came; the state was
      saved at the step named, from which the same call resumes.
  """
  run_config.validate_training(config)
  task = task or tasks.create_task(config)
  if train_batches is None:
    checked_source(config)
  train_batches = train_batches or train_batches_fn(config)
  eval_batches = eval_batches or validation_batches_fn(config)
  run_config.start_or_resume(workdir, config, tasks.ADDED_KEY_DEFAULTS)
  writer = writers.create_writer(workdir)
  manager = checkpointing.create_manager(workdir, config.keep_checkpoints)
  try:
    start_step, state = checkpointing.resume(
        workdir, manager, step_lib.abstract_train_state(task, config))
    if start_step is None:
      start_step, state = 0, step_lib.create_train_state(task, config)
    else:
      logging.info("Resuming from the checkpoint at step %d in %s.", start_step,
                   checkpointing.checkpoint_dir(workdir))
    steps = step_lib.ParallelSteps(task, config.seed)
    state = steps.replicate(state)
    train_iter = jax_utils.prefetch_to_device(train_batches(start_step), 2)
    report = periodic_actions.ReportProgress(
        num_train_steps=config.steps, writer=writer, every_steps=config.log_every)
    history, previous = [], None
    with preemption.Notice(manager) as notice:
      for step in range(start_step + 1, config.steps + 1):
        state, metrics = steps.train(state, next(train_iter))
        # The previous step's flag: checking it keeps one step in flight.
        _check_finite(previous, step - 1, manager)
        previous = metrics
        history.append(metrics)
        report(step)
        preempted = notice.reached(step)
        logs = step % config.log_every == 0 or step == config.steps or preempted
        saves = (step % config.checkpoint_every == 0 or step == config.steps
                 or preempted)
        if logs or saves:  # Nothing non-finite is logged or saved.
          _check_finite(metrics, step, manager)
        if logs:
          history = step_lib.unreplicate(history)
          scalars = {f"train/{k}": float(np.mean([m[k] for m in history]))
                     for k in history[0] if k != "finite"}
          scalars.update({f"train/{k}": v for k, v in
                          steps.parameter_metrics(state.params).items()})
          writer.write_scalars(step, scalars)
          history = []
        if (step % config.eval_every == 0 and step != config.steps
            and not preempted):
          _evaluate_and_draw(steps, state.params, eval_batches, writer, config,
                             workdir, step)
        if saves:
          checkpointing.save(manager, step, step_lib.unreplicate(state))
        if preempted:
          raise preemption.Preempted(step,
                                     checkpointing.checkpoint_dir(workdir))
    return _evaluate_and_draw(steps, state.params, eval_batches, writer, config,
                              workdir, max(config.steps, start_step))
  finally:
    manager.wait_until_finished()
    manager.close()
    writer.flush()


def _check_finite(metrics, step: int, manager) -> None:
  """Raises :class:`NonFiniteError` if ``metrics`` flag a non-finite step.

  The one check of the step's ``finite`` flag (``step_lib.train_step``).
  """
  if metrics is None or float(step_lib.unreplicate(metrics["finite"])) == 1.0:
    return
  latest = manager.latest_step()
  kept = (f"the checkpoint at step {latest} is kept" if latest is not None
          else "no checkpoint was written")
  raise NonFiniteError(
      f"Non-finite loss, gradient or parameters at step {step} (loss="
      f"{float(step_lib.unreplicate(metrics['loss']))}). Training stopped "
      f"without saving that step; {kept}. Try a lower config.learning_rate "
      "or config.precision='float32'.")


def _evaluate_and_draw(steps: step_lib.ParallelSteps, params,
                       eval_batches: BatchesFn, writer,
                       config: ml_collections.ConfigDict, workdir: str,
                       step: int) -> Dict[str, float]:
  batches = iter(eval_batches())
  first = next(batches)  # Drawn below; one pass serves both.
  metrics = evaluate(steps, params, itertools.chain([first], batches))
  writer.write_scalars(step, {f"eval/{k}": v for k, v in metrics.items()})
  path = write_image_grid(steps, params, first, writer=writer, workdir=workdir,
                          step=step, tag="eval", count=config.num_images)
  if path:
    logging.info("Wrote %s", path)
  return metrics


def evaluate_directory(config: ml_collections.ConfigDict, workdir: str,
                       directory: str) -> Dict[str, float]:
  """Evaluates the newest checkpoint on every image file in ``directory``.

  Writes the means, ``step``, ``num_images``, ``eval_dir`` and, for
  reconstruction, the :class:`BaselineScores` of the same pass to
  ``WORKDIR/eval.json`` and returns them.
  """
  batches = directory_batches_fn(config, directory)
  baselines = None
  if config.task == "reconstruction":
    baselines = BaselineScores(config)
    batches = lambda observed=batches: baselines.observe(observed())
  metrics = evaluate_checkpoint(config, workdir, batches, tag="eval_dir")
  result = dict(metrics, eval_dir=os.path.abspath(directory),
                num_images=len(sources.list_image_files(directory,
                                                        recursive=False)))
  if baselines is not None:
    result.update(baselines.result())
  if jax.process_index() == 0:
    path = epath.Path(workdir) / "eval.json"
    path.write_text(json.dumps(result, indent=2, sort_keys=True))
  return result
