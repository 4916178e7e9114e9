"""Tests of finola_jax.train: steps, resumption, NaN guard, checkpoints, pictures.

In-process, on the 4 CPU devices of tests/conftest.py. ``ToyTask`` (a linear
regression, compiles in about a second) checks the trainer's own logic; the
tiny reconstruction config of tests/helpers.py checks it with a real model.
"""

import itertools
import logging
import os
import re
import shutil
import subprocess
import sys
from unittest import mock

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
import tensorflow as tf
from PIL import Image

from finola_jax import tasks
from finola_jax.data import input_pipeline
from finola_jax.runner import trainer
from finola_jax.train import checkpointing
from finola_jax.train import run_config
from finola_jax.train import step as step_lib
from finola_jax.train import writers
from tests import helpers

SIZE = helpers.TINY_MODEL["image_size"]
# The autoencoder with the fewest layers (no downsampling, no upsampling):
# the quickest to compile.
SMALLEST = dict(stride=1, encoder_depth=0)


def test_the_matrices_learn_at_their_own_rate():
  params = {"matrices": {"A": jnp.ones((3, 3)), "B": -jnp.ones((3, 3))},
            "encoder": {"kernel": jnp.arange(4.0)}}
  gradients = jax.tree.map(lambda p: 0.1 * p + 0.05, params)

  def first_update(scale):
    config = helpers.tiny_config(warmup_steps=0,
                                 matrix_learning_rate_scale=scale)
    optimizer = step_lib.create_optimizer(config)
    return optimizer.update(gradients, optimizer.init(params), params)[0]

  full, quarter = first_update(1.0), first_update(0.25)
  assert all(jnp.all(u != 0) for u in jax.tree.leaves(full))
  chex.assert_trees_all_close(quarter["encoder"], full["encoder"])
  chex.assert_trees_all_close(quarter["matrices"],
                              jax.tree.map(lambda u: 0.25 * u,
                                           full["matrices"]), rtol=1e-6)


class ToyTask(step_lib.Task):
  """Predicts each image's mean colour plus noise drawn from its example key.

  ``kink`` adds ``sum(sqrt(|b|))`` to the loss: finite at the initial
  ``b = 0``, but with a non-finite gradient there.
  """
  visualization_columns = ("image",)

  def __init__(self, kink: bool = False):
    self.kink = kink

  def init_params(self, rng):
    return {"w": jax.random.normal(rng, (3, 3)), "b": jnp.zeros(3)}

  def loss(self, params, batch, example_keys):
    colour = jnp.mean(batch["image"], axis=(1, 2))
    noise = jax.vmap(lambda key: jax.random.normal(key, (3,)))(example_keys)
    error = colour @ params["w"] + params["b"] - (colour + 0.1 * noise)
    loss = jnp.mean(jnp.square(error))
    if self.kink:
      loss = loss + jnp.sum(jnp.sqrt(jnp.abs(params["b"])))
    return loss, {"mse": jnp.mean(jnp.square(error))}

  def eval_metrics(self, params, batch, example_keys):
    noise = jax.vmap(jax.random.uniform)(example_keys)
    return {"mean": jnp.mean(batch["image"], axis=(1, 2, 3)), "noise": noise}

  def visualize(self, params, batch, example_keys):
    return [batch["image"]]


def _images(count, seed=0, size=SIZE):
  return np.random.default_rng(seed).uniform(
      size=(count, size, size, 3)).astype(np.float32)


def _device_batch(images, devices):
  return {"image": images.reshape((devices, -1) + images.shape[1:])}


def _config(**overrides):
  return helpers.tiny_config(**dict(dict(steps=6, learning_rate=1e-2,
                                         warmup_steps=2, checkpoint_every=3),
                                    **overrides))


def _eval_batches(images, batch_size=helpers.BATCH_SIZE, devices=None):
  """The pipeline's padded eval batches of in-memory images."""
  layout = input_pipeline.batch_layout(batch_size, local_device_count=devices)
  examples = tf.data.Dataset.from_tensor_slices(
      {"image": images, "index": np.arange(len(images), dtype=np.int32)})
  return lambda: input_pipeline.batch_eval_examples(
      examples, len(images), layout, images.shape[1])


# ------------------------------------------------------------- parallelism ---


@pytest.mark.parametrize("task_name", ["toy", "reconstruction"])
def test_step_on_two_devices_equals_step_on_one(task_name):
  config = _config(warmup_steps=0, **SMALLEST)
  task = ToyTask() if task_name == "toy" else tasks.create_task(config)
  images = _images(helpers.BATCH_SIZE)
  state = step_lib.create_train_state(task, config)
  results = {}
  for devices in (1, 2):
    steps = step_lib.ParallelSteps(task, config.seed,
                                   devices=jax.local_devices()[:devices])
    replicated, metrics = steps.train(steps.replicate(state),
                                      _device_batch(images, devices))
    for leaf in jax.tree_util.tree_leaves(jax.device_get(replicated)):
      assert leaf.shape[0] == devices
      np.testing.assert_array_equal(leaf[0], leaf[-1])  # Replicas agree.
    results[devices] = (step_lib.unreplicate(replicated),
                        step_lib.unreplicate(metrics))
  (one, one_metrics), (two, two_metrics) = results[1], results[2]
  for key, value in one_metrics.items():
    np.testing.assert_allclose(two_metrics[key], value, rtol=1e-5, err_msg=key)
  assert one_metrics["finite"] == 1.0
  assert int(one.step) == int(two.step) == 1

  # Adam turns gradients at float32 noise level (e.g. of a conv bias before
  # a GroupNorm, which the loss does not depend on) into steps of any sign, so
  # those elements are left out; they are few.
  # One Adam state per parameter group when A and B learn at their own rate:
  # each holds the second moments of its group, MaskedNode elsewhere.
  second_moments = [nu for _, nu in optax.tree_utils.tree_get_all_with_path(
      one.opt_state, "nu")]
  masked = lambda x: isinstance(x, optax.MaskedNode)
  gradient_size = jax.tree_util.tree_map(
      lambda *group: np.sqrt(next(nu for nu in group if not masked(nu))),
      *second_moments, is_leaf=masked)
  largest = max(float(g.max()) for g in jax.tree_util.tree_leaves(gradient_size))
  resolved = jax.tree_util.tree_map(lambda g: g > 1e-6 * largest, gradient_size)
  flat = lambda tree: np.concatenate(
      [np.ravel(x) for x in jax.tree_util.tree_leaves(tree)])
  assert flat(resolved).mean() > 0.95
  select = lambda tree: flat(tree)[flat(resolved)]
  np.testing.assert_allclose(select(two.params), select(one.params),
                             rtol=1e-5, atol=1e-6)
  initial = select(jax.device_get(state.params))
  assert np.mean(~np.isclose(select(one.params), initial)) > 0.9  # They moved.


def test_evaluation_streams_padded_batches_and_keys_examples_by_index():
  """Means over real examples only; per-example randomness keyed by the
  example's index in the split, whatever the device layout."""
  images = _images(10, size=4)
  task = ToyTask()
  params = task.init_params(jax.random.PRNGKey(0))
  results = []
  for devices in (1, 4):
    steps = step_lib.ParallelSteps(task, 0, devices=jax.local_devices()[:devices])
    batches = list(_eval_batches(images, 8, devices)())
    assert len(batches) == 2
    assert batches[0]["image"].shape == (devices, 8 // devices, 4, 4, 3)
    masks = np.concatenate([b["mask"].reshape(-1) for b in batches])
    np.testing.assert_array_equal(masks, [1] * 10 + [0] * 6)
    results.append(trainer.evaluate(steps, steps.replicate(params),
                                    iter(batches)))
  assert results[0]["mean"] == pytest.approx(float(images.mean()), rel=1e-5)
  noise = jax.vmap(jax.random.uniform)(step_lib.evaluation_keys(jnp.arange(10)))
  for result in results:
    assert result["noise"] == pytest.approx(float(jnp.mean(noise)), rel=1e-5)


# ---------------------------------------------------------------- NaN guard ---


@pytest.mark.parametrize("case", ["nan_loss", "finite_loss_infinite_gradient"])
def test_non_finite_step_leaves_the_state_unchanged(case):
  task = ToyTask(kink=case == "finite_loss_infinite_gradient")
  config = _config(warmup_steps=0)
  images = _images(helpers.BATCH_SIZE)
  bad = images.copy()
  if case == "nan_loss":
    bad[2, 3, 4, 1] = np.nan
  state = step_lib.create_train_state(task, config)
  steps = step_lib.ParallelSteps(task, config.seed)
  devices = len(steps.devices)
  before = jax.device_get(state)

  after, metrics = steps.train(steps.replicate(state), _device_batch(bad, devices))
  metrics = jax.device_get(metrics)
  np.testing.assert_array_equal(metrics["finite"], np.zeros(devices))
  assert np.isfinite(metrics["loss"][0]) == (case != "nan_loss")
  after = step_lib.unreplicate(after)
  helpers.assert_trees_equal(after.params, before.params)
  helpers.assert_trees_equal(after.opt_state.inner_state,
                             before.opt_state.inner_state)
  assert int(after.opt_state.total_notfinite) == 1

  if case == "nan_loss":  # The same step on clean data does update.
    good, metrics = steps.train(steps.replicate(state),
                                _device_batch(images, devices))
    assert float(step_lib.unreplicate(metrics)["finite"]) == 1.0
    assert int(step_lib.unreplicate(good).step) == int(before.step) + 1


def _toy_batches(bad_step):
  """Device batches for steps start+1, start+2, ...; NaN images at bad_step."""
  def train_batches(start_step):
    for step in itertools.count(start_step + 1):
      images = _images(helpers.BATCH_SIZE, seed=step)
      if step == bad_step:
        images[:] = np.nan
      yield _device_batch(images, jax.local_device_count())
  return train_batches


@pytest.mark.parametrize("bad_step, kept", [(1, []), (4, [2]), (5, [2, 4])])
def test_nan_guard_stops_training_and_keeps_finite_checkpoints(
    tmp_path, bad_step, kept):
  # log_every=100: at step 5 the flag is checked one step later, as usual.
  config = _config(steps=8, checkpoint_every=2, log_every=100,
                   keep_checkpoints=10)
  with pytest.raises(trainer.NonFiniteError) as error:
    trainer.train_and_evaluate(
        config, str(tmp_path), task=ToyTask(),
        train_batches=_toy_batches(bad_step),
        eval_batches=_eval_batches(_images(helpers.BATCH_SIZE)))
  message = str(error.value)
  assert (f"Non-finite loss, gradient or parameters at step {bad_step} "
          "(loss=nan)") in message
  assert "config.learning_rate" in message
  if kept:
    assert f"the checkpoint at step {kept[-1]} is kept" in message
  else:
    assert "no checkpoint was written" in message
  assert helpers.checkpoint_steps(tmp_path) == kept
  manager = checkpointing.create_manager(str(tmp_path), read_only=True)
  for step in kept:
    restored = manager.restore(step, args=ocp.args.StandardRestore())
    chex.assert_tree_all_finite(restored)
    assert int(restored["step"]) == step
  manager.close()


@pytest.mark.filterwarnings("ignore:overflow encountered in cast")
def test_finite_gradients_that_overflow_the_parameters_stop_the_run(tmp_path):
  # A learning rate beyond float32's range: the first update is infinite
  # although the loss and gradients are finite.
  config = _config(steps=4, checkpoint_every=1, log_every=100,
                   learning_rate=1e39, warmup_steps=0)
  with pytest.raises(trainer.NonFiniteError) as error:
    trainer.train_and_evaluate(
        config, str(tmp_path), task=ToyTask(),
        train_batches=_toy_batches(bad_step=None),
        eval_batches=_eval_batches(_images(helpers.BATCH_SIZE)))
  message = str(error.value)
  assert re.search(r"Non-finite loss, gradient or parameters at step 1 "
                   r"\(loss=[0-9.e-]+\)", message), message
  assert "no checkpoint was written" in message
  assert helpers.checkpoint_steps(tmp_path) == []


# --------------------------------------------------------------- resumption ---


class Interrupted(Exception):
  """Stands for the process being killed."""


@pytest.fixture(scope="module")
def resumed_runs(tmp_path_factory):
  """``(config, straight, interrupted)``: two 6-step reconstruction runs.

  ``interrupted`` dies right after its checkpoint at step 3 and is resumed.
  """
  root = tmp_path_factory.mktemp("resume")
  config = _config(eval_every=3, **SMALLEST)
  straight, interrupted = str(root / "straight"), str(root / "interrupted")
  with mock.patch.object(writers.metric_writers.MultiWriter, "write_images",
                         autospec=True) as tensorboard:
    trainer.train_and_evaluate(config, straight)

  save = checkpointing.save

  def save_then_die(manager, step, state):
    save(manager, step, state)
    if step == 3:
      raise Interrupted

  with mock.patch.object(checkpointing, "save", save_then_die):
    with pytest.raises(Interrupted):
      trainer.train_and_evaluate(config, interrupted)
  assert helpers.checkpoint_steps(interrupted) == [3]
  assert helpers.train_loss_steps(interrupted) == [1, 2, 3]
  final = trainer.train_and_evaluate(config, interrupted)
  assert set(final) == {"psnr", "ssim"}
  return config, straight, interrupted, tensorboard.call_args.args[2]["eval"][0]


def test_interrupted_and_resumed_run_equals_uninterrupted_run(resumed_runs):
  _, straight, interrupted, _ = resumed_runs
  for workdir in (straight, interrupted):
    assert helpers.checkpoint_steps(workdir) == [3, 6]
    assert helpers.train_loss_steps(workdir) == list(range(1, 7))
  (step, expected), (other_step, actual) = map(
      checkpointing.restore_latest_params, (straight, interrupted))
  assert step == other_step == 6
  helpers.assert_trees_equal(actual, expected)
  # The resumed steps saw the same batches: the same losses.
  losses = [{r["step"]: r["train/loss"] for r in helpers.read_metrics(w)
             if "train/loss" in r} for w in (straight, interrupted)]
  assert losses[0] == losses[1]


def test_summaries_config_and_pictures(resumed_runs):
  """metrics.jsonl: a JSON object with a step per line; config.json: the
  config; PNG grids (the same as in TensorBoard) enlarged and labelled."""
  config, workdir, _, tensorboard_image = resumed_runs
  records = helpers.read_metrics(workdir)
  train = [r for r in records if "train/loss" in r]
  evals = [r for r in records if "eval/psnr" in r]
  assert [r["step"] for r in train] == list(range(1, 7))
  watched = {f"train/{k}" for k in (
      "max_abs_z", "mean_abs_z", "edge_to_centre", "A_spectral_norm",
      "B_spectral_norm", "A_symmetric_max_eig", "B_symmetric_max_eig")}
  assert all(set(r) == {"step", "train/loss", "train/mse"} | watched
             for r in train)
  # The matrix quantities at the last step are those of its parameters.
  _, params = checkpointing.restore_latest_params(workdir)
  for name in ("A", "B"):
    matrix = np.asarray(params["matrices"][name], np.float64)
    np.testing.assert_allclose(train[-1][f"train/{name}_spectral_norm"],
                               np.linalg.norm(matrix, 2), rtol=1e-4)
    np.testing.assert_allclose(
        train[-1][f"train/{name}_symmetric_max_eig"],
        np.linalg.eigvalsh(0.5 * (matrix + matrix.T))[-1], rtol=1e-4, atol=1e-6)
  assert all(r["train/max_abs_z"] >= r["train/mean_abs_z"] > 0 for r in train)
  assert [r["step"] for r in evals] == [3, 6]
  assert all(set(r) == {"step", "eval/psnr", "eval/ssim"} for r in evals)
  assert all(np.isfinite(v) for r in records for v in r.values())
  assert run_config.to_dict(run_config.read(workdir)) == run_config.to_dict(config)

  pictures = sorted(os.listdir(os.path.join(workdir, "images")))
  assert pictures == ["eval_0000003.png", "eval_0000006.png"]
  with Image.open(os.path.join(workdir, "images", pictures[-1])) as png:
    grid = np.asarray(png, np.float32) / 255
  np.testing.assert_allclose(grid, tensorboard_image, atol=0.5 / 255)
  factor = writers.MIN_CELL_SIZE // SIZE  # 16 px images shown at 128 px.
  cell, gutter = factor * SIZE, 4
  label = grid.shape[0] - config.num_images * (cell + gutter) + gutter
  assert grid.shape == (label + config.num_images * (cell + gutter) - gutter,
                        2 * cell + gutter, 3)
  for column in range(2):  # "input | reconstruction": dark text on white.
    header = grid[:label, column * (cell + gutter):(column + 1) * cell]
    assert 0 < np.mean(header < 0.5) < 0.3, column
  image = grid[label:label + cell, :cell]  # Nearest-neighbour enlargement.
  np.testing.assert_array_equal(image, np.repeat(np.repeat(
      image[::factor, ::factor], factor, axis=0), factor, axis=1))


@pytest.mark.parametrize("mode", ["resume", "evaluate"])
def test_another_config_in_a_used_workdir_is_refused(resumed_runs, mode):
  config, workdir, _, _ = resumed_runs
  steps_before = helpers.checkpoint_steps(workdir)
  other = config.copy_and_resolve_references()
  other.update(channels=16, learning_rate=0.5, log_every=7, data_dir="/x")
  with pytest.raises(run_config.ConfigError) as error:
    if mode == "resume":
      trainer.train_and_evaluate(other, workdir)
    else:
      trainer.evaluation_config(workdir, other)
  message = str(error.value)
  assert f"--workdir={workdir} holds a run with another config" in message
  assert "config.channels: saved 8 vs now 16" in message
  assert "config.learning_rate: saved 0.01 vs now 0.5" in message
  assert "log_every" not in message.split("(only")[0]  # May change.
  assert "data_dir" not in message.split("(only")[0]
  assert helpers.checkpoint_steps(workdir) == steps_before


# --------------------------------------------------- unreadable checkpoints ---


def _truncate(directory):
  """Cuts every file of a checkpoint in half, as a killed copy would."""
  for root, _, names in os.walk(directory):
    for name in names:
      path = os.path.join(root, name)
      os.truncate(path, os.path.getsize(path) // 2)


def test_unreadable_newest_checkpoint_falls_back(tmp_path, resumed_runs, caplog):
  config, straight, _, _ = resumed_runs
  caplog.set_level(logging.INFO, logger="absl")
  workdir = shutil.copytree(straight, str(tmp_path / "run"))
  _truncate(os.path.join(workdir, "checkpoints", "6"))

  config = trainer.evaluation_config(workdir)
  metrics = trainer.evaluate_checkpoint(config, workdir,
                                        trainer.validation_batches_fn(config))
  assert metrics["step"] == 3
  assert "checkpoint at step 6" in caplog.text and "unreadable" in caplog.text
  assert helpers.checkpoint_steps(workdir) == [3, 6]  # Evaluating moves nothing.

  caplog.clear()
  trainer.train_and_evaluate(config, workdir)  # Resumes from 3, saves 6 anew.
  assert "Resuming from the checkpoint at step 3" in caplog.text
  assert helpers.checkpoint_steps(workdir) == [3, 6]
  set_aside = os.path.join(workdir, "checkpoints_unreadable", "6")
  assert os.path.isdir(set_aside)
  assert f"to {os.path.dirname(set_aside)}" in caplog.text
  _, expected = checkpointing.restore_latest_params(straight)
  _, actual = checkpointing.restore_latest_params(workdir)
  helpers.assert_trees_equal(actual, expected)

  for step in (3, 6):
    _truncate(os.path.join(workdir, "checkpoints", str(step)))
  for attempt in (lambda: trainer.evaluate_checkpoint(
                      config, workdir, trainer.validation_batches_fn(config)),
                  lambda: trainer.train_and_evaluate(config, workdir)):
    with pytest.raises(checkpointing.UnreadableCheckpointError,
                       match=r"steps \[6, 3\] are all unreadable .*readable: none"):
      attempt()
  assert helpers.checkpoint_steps(workdir) == [3, 6]  # Nothing deleted.


# ---------------------------------------------------------- no TensorFlow ---


def test_models_tasks_and_train_step_need_no_tensorflow():
  """The train step of a config builds and runs where TensorFlow, clu and
  tfds cannot be imported (as on an accelerator host without them)."""
  code = """
import sys
class Block:
  def find_spec(self, name, path=None, target=None):
    if name.split(".")[0] in ("tensorflow", "clu", "tensorflow_datasets"):
      raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
import jax, numpy as np
from finola_jax import tasks
import finola_jax.models.autoencoder, finola_jax.models.masked
from finola_jax.train import step
from tests import helpers
config = helpers.tiny_config(stride=1, encoder_depth=0)
task = tasks.create_task(config)
state = step.create_train_state(task, config)
steps = step.ParallelSteps(task, config.seed)
# Not zeros: q = 0 exactly, where n(z) has slope 1/√ε and the walk's backward
# through 15 steps of A at scale 1 overflows (a degenerate input).
images = np.random.default_rng(0).uniform(size=(4, 1, 16, 16, 3))
batch = {"image": images.astype(np.float32)}
state, metrics = steps.train(steps.replicate(state), batch)
print(float(step.unreplicate(metrics)["finite"]))
"""
  out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                       text=True, cwd=helpers.REPO_ROOT)
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.strip() == "1.0"


def test_decoding_in_chunks_changes_no_loss_or_gradient():
  """``decoder_chunk`` (a loop that recomputes the decoder) only saves memory.

  The masked model decodes through the same ``layers.decode_in_chunks``.
  Run with the upsampler's group normalization: it is per example, so the
  chunks must not change it (the plain upsampler's chunks: test_numerics).
  """
  images = jax.random.uniform(jax.random.PRNGKey(1), (4, SIZE, SIZE, 3))
  keys = jax.random.split(jax.random.PRNGKey(2), 4)
  results = []
  # 3 does not divide the batch of 4: chunks of 2.
  for chunk in (0, 3):
    task = tasks.create_task(helpers.tiny_config(
        decoder_chunk=chunk, upsampler_norm="group", **SMALLEST))
    params = helpers.initial_params(task)
    results.append(jax.jit(jax.value_and_grad(task.loss, has_aux=True))(
        params, {"image": images}, keys))
  (plain, _), plain_grads = results[0]
  (chunked, _), chunked_grads = results[1]
  chex.assert_trees_all_equal_structs(plain_grads, chunked_grads)
  np.testing.assert_allclose(chunked, plain, rtol=1e-5)
  chex.assert_trees_all_close(chunked_grads, plain_grads, rtol=1e-4,
                              atol=1e-6)
