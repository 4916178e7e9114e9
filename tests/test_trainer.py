"""Tests for finola_jax.train.trainer: data parallelism, resumption, NaN guard.

In-process, on the 4 CPU devices of tests/conftest.py. ``ToyTask`` (a linear
regression, compiles in about a second) checks the trainer's own logic; the
tiny ``ReconstructionTask`` of tests/helpers.py checks it with a real model.
"""

import dataclasses
import itertools
import json
import os
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from PIL import Image

from finola_jax.train import checkpointing
from finola_jax.train import trainer
from tests import helpers
from tests.helpers import compilation_cache  # pylint: disable=unused-import (fixture)

# Runs with the same settings load their compiled steps instead of compiling.
pytestmark = pytest.mark.usefixtures("compilation_cache")

SIZE = helpers.TINY_MODEL["image_size"]
# The autoencoder with the fewest layers (no downsampling, no upsampling):
# the quickest to compile.
SMALLEST = dict(stride=1, encoder_depth=0)


@dataclasses.dataclass(frozen=True)
class ToyTask(trainer.Task):
  """Predicts each image's mean colour plus noise drawn from its example key.

  ``kink`` adds ``sum(sqrt(|b|))`` to the loss: finite at the initial
  ``b = 0``, but with a non-finite gradient there.
  """
  kink: bool = False

  def init_params(self, rng, batch):
    return {"w": jax.random.normal(rng, (3, 3)), "b": jnp.zeros(3)}

  def loss(self, params, batch, example_keys):
    colour = jnp.mean(batch["image"], axis=(1, 2))
    noise = jax.vmap(lambda key: jax.random.normal(key, (3,)))(example_keys)
    error = colour @ params["w"] + params["b"] - (colour + 0.1 * noise)
    loss = jnp.mean(jnp.square(error))
    if self.kink:
      loss = loss + jnp.sum(jnp.sqrt(jnp.abs(params["b"])))
    return loss, {"mse": jnp.mean(jnp.square(error))}

  def eval_metrics(self, params, batch):
    return {"mean": jnp.mean(batch["image"], axis=(1, 2, 3))}

  def visualize(self, params, batch):
    return [batch["image"]]

  def describe(self):
    return {"toy": True, "kink": self.kink}


def _images(count, seed=0, size=SIZE):
  return np.random.default_rng(seed).uniform(
      size=(count, size, size, 3)).astype(np.float32)


def _device_batch(images, devices):
  return {"image": images.reshape((devices, -1) + images.shape[1:])}


def _host(tree):
  """Device 0's copy of a replicated tree, as numpy arrays.

  (``flax.jax_utils.unreplicate`` keeps the device axis of a 1-device mesh
  when there are more local devices.)
  """
  return jax.tree_util.tree_map(lambda x: np.asarray(x)[0], jax.device_get(tree))


# ------------------------------------------------------------- parallelism ---


@pytest.mark.parametrize("task_name", ["toy", "reconstruction"])
def test_step_on_two_devices_equals_step_on_one(task_name):
  task = ToyTask() if task_name == "toy" else helpers.reconstruction_task(**SMALLEST)
  config = helpers.train_config("unused", warmup_steps=0)
  images = _images(helpers.BATCH_SIZE)
  state = trainer.create_train_state(task, config, {"image": images[:1]})
  results = {}
  for devices in (1, 2):
    steps = trainer.ParallelSteps(task, config.seed,
                                  devices=jax.local_devices()[:devices])
    replicated, metrics = steps.train(steps.replicate(state),
                                      _device_batch(images, devices))
    for leaf in jax.tree_util.tree_leaves(jax.device_get(replicated)):
      assert leaf.shape[0] == devices
      np.testing.assert_array_equal(leaf[0], leaf[-1])  # Replicas agree.
    results[devices] = (_host(replicated), _host(metrics))
  (one, one_metrics), (two, two_metrics) = results[1], results[2]
  for key, value in one_metrics.items():
    np.testing.assert_allclose(two_metrics[key], value, rtol=1e-5, err_msg=key)
  assert one_metrics["finite"] == 1.0
  assert int(one.step) == int(two.step) == 1

  # Adam turns gradients at float32 noise level (e.g. of a conv bias before
  # a GroupNorm, which the loss does not depend on) into steps of any sign, so
  # those elements are left out; they are few.
  gradient_size = jax.tree_util.tree_map(
      np.sqrt, optax.tree_utils.tree_get(one.opt_state, "nu"))
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


# ---------------------------------------------------------------- NaN guard ---


@pytest.mark.parametrize("case", ["nan_loss", "finite_loss_infinite_gradient"])
def test_non_finite_step_leaves_the_state_unchanged(case):
  task = ToyTask(kink=case == "finite_loss_infinite_gradient")
  config = helpers.train_config("unused", warmup_steps=0)
  images = _images(helpers.BATCH_SIZE)
  bad = images.copy()
  if case == "nan_loss":
    bad[2, 3, 4, 1] = np.nan
  state = trainer.create_train_state(task, config, {"image": images[:1]})
  steps = trainer.ParallelSteps(task, config.seed)
  devices = len(steps.devices)
  before = jax.device_get(state)

  after, metrics = steps.train(steps.replicate(state), _device_batch(bad, devices))
  metrics = jax.device_get(metrics)
  np.testing.assert_array_equal(metrics["finite"], np.zeros(devices))
  assert np.isfinite(metrics["loss"][0]) == (case != "nan_loss")
  after = _host(after)
  assert int(after.step) == int(before.step)
  helpers.assert_trees_equal(after.params, before.params)
  helpers.assert_trees_equal(after.opt_state, before.opt_state)

  if case == "nan_loss":  # The same step on clean data does update.
    good, metrics = steps.train(steps.replicate(state),
                                _device_batch(images, devices))
    assert float(_host(metrics)["finite"]) == 1.0
    assert int(_host(good).step) == int(before.step) + 1
    assert not np.allclose(_host(good).params["w"], before.params["w"])


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
  config = helpers.train_config(tmp_path, steps=8, checkpoint_every=2,
                                log_every=100, keep_checkpoints=10)
  eval_images = _images(helpers.BATCH_SIZE)
  with pytest.raises(trainer.NonFiniteError) as error:
    trainer.train_and_evaluate(
        ToyTask(), config, _toy_batches(bad_step),
        lambda: trainer.pad_to_device_batches(eval_images, helpers.BATCH_SIZE))
  message = str(error.value)
  assert f"Non-finite loss or gradient at step {bad_step} (loss=nan)" in message
  assert "--learning_rate" in message
  if kept:
    assert f"the checkpoint at step {kept[-1]} is kept" in message
  else:
    assert "no checkpoint was written" in message
  assert helpers.checkpoint_steps(tmp_path) == kept
  manager = checkpointing.create_manager(str(tmp_path), read_only=True)
  for step in kept:
    restored = manager.restore(step, args=ocp.args.StandardRestore())
    assert checkpointing.all_finite(restored)
    assert int(restored["step"]) == step
  manager.close()


def test_save_refuses_non_finite_states(tmp_path):
  manager = checkpointing.create_manager(str(tmp_path))
  checkpointing.save(manager, 1, {"w": np.ones(3, np.float32)})
  manager.wait_until_finished()
  for value in (np.nan, np.inf):
    with pytest.raises(FloatingPointError, match="non-finite state at step 2"):
      checkpointing.save(manager, 2, {"w": np.array([1.0, value], np.float32)})
  manager.wait_until_finished()
  manager.close()
  assert helpers.checkpoint_steps(tmp_path) == [1]


# --------------------------------------------------------------- resumption ---


class Interrupted(Exception):
  """Stands for the process being killed."""


@pytest.fixture(scope="module")
def resumed_runs(tmp_path_factory):
  """``(straight, interrupted)`` configs of two 6-step reconstruction runs.

  ``interrupted`` dies right after its checkpoint at step 3 and is resumed.
  """
  root = tmp_path_factory.mktemp("resume")
  task = helpers.reconstruction_task(**SMALLEST)
  train_batches, eval_batches = helpers.embedded_batches()
  straight = helpers.train_config(root / "straight", eval_every=3)
  interrupted = helpers.train_config(root / "interrupted", eval_every=3)
  trainer.train_and_evaluate(task, straight, train_batches, eval_batches)

  save = checkpointing.save

  def save_then_die(manager, step, state):
    save(manager, step, state)
    if step == 3:
      raise Interrupted

  with mock.patch.object(checkpointing, "save", save_then_die):
    with pytest.raises(Interrupted):
      trainer.train_and_evaluate(task, interrupted, train_batches, eval_batches)
  assert helpers.checkpoint_steps(interrupted.workdir) == [3]
  assert helpers.train_loss_steps(interrupted.workdir) == [1, 2, 3]
  final = trainer.train_and_evaluate(task, interrupted, train_batches,
                                     eval_batches)
  assert set(final) == {"psnr", "ssim"}
  return straight, interrupted


def test_interrupted_and_resumed_run_equals_uninterrupted_run(resumed_runs):
  straight, interrupted = resumed_runs
  for config in resumed_runs:
    assert helpers.checkpoint_steps(config.workdir) == [3, 6]
    assert helpers.train_loss_steps(config.workdir) == list(range(1, 7))
  step, expected = checkpointing.restore_latest_params(straight.workdir)
  assert step == 6
  step, actual = checkpointing.restore_latest_params(interrupted.workdir)
  assert step == 6
  helpers.assert_trees_equal(actual, expected)
  # The resumed steps saw the same batches: the same losses.
  losses = [{r["step"]: r["train/loss"] for r in helpers.read_metrics(c.workdir)
             if "train/loss" in r} for c in resumed_runs]
  assert losses[0] == losses[1]


def test_summaries_and_pictures(resumed_runs):
  """metrics.jsonl: a JSON object with a step per line; PNG grids in images/."""
  config = resumed_runs[0]
  records = helpers.read_metrics(config.workdir)
  train = [r for r in records if "train/loss" in r]
  evals = [r for r in records if "eval/psnr" in r]
  assert [r["step"] for r in train] == list(range(1, 7))
  assert all(set(r) == {"step", "train/loss", "train/mse"} for r in train)
  assert [r["step"] for r in evals] == [3, 6]
  assert all(set(r) == {"step", "eval/psnr", "eval/ssim"} for r in evals)
  assert all(np.isfinite(v) for r in records for v in r.values())
  pictures = sorted(os.listdir(os.path.join(config.workdir, "images")))
  assert pictures == ["eval_0000003.png", "eval_0000006.png"]
  with Image.open(os.path.join(config.workdir, "images", pictures[-1])) as png:
    # num_images rows of (input | reconstruction).
    assert png.size == (2 * SIZE, config.num_images * SIZE)
  with open(os.path.join(config.workdir, "config.json")) as f:
    assert json.load(f) == json.loads(json.dumps(
        helpers.reconstruction_task(**SMALLEST).describe()))


# ------------------------------------------------------------------- pieces ---


def test_check_run_config_refuses_other_settings(tmp_path):
  workdir = str(tmp_path / "run")
  trainer.check_run_config(workdir, {"channels": 8, "stride": 2}, write=False)
  assert not os.path.exists(workdir)
  trainer.check_run_config(workdir, {"channels": 8, "stride": 2})
  trainer.check_run_config(workdir, {"channels": 8, "stride": 2})  # Same: fine.
  with pytest.raises(ValueError, match=r"channels: saved 8 vs now 16\)"):
    trainer.check_run_config(workdir, {"channels": 16, "stride": 2})
  with pytest.raises(ValueError, match=r"stride: saved 2 vs now 4"):
    trainer.check_run_config(workdir, {"channels": 8, "stride": 4}, write=False)


def test_evaluate_averages_real_examples_only():
  images = _images(10, size=4)
  batches = list(trainer.pad_to_device_batches(images, 8))
  devices = jax.local_device_count()
  assert len(batches) == 2
  for batch in batches:
    assert batch["image"].shape == (devices, 8 // devices, 4, 4, 3)
    assert batch["mask"].shape == (devices, 8 // devices)
  masks = np.concatenate([b["mask"].reshape(-1) for b in batches])
  np.testing.assert_array_equal(masks, [1] * 10 + [0] * 6)
  flat = np.concatenate([b["image"].reshape(-1, 4, 4, 3) for b in batches])
  np.testing.assert_array_equal(flat[:10], images)
  assert not flat[10:].any()

  task = ToyTask()
  steps = trainer.ParallelSteps(task, 0)
  params = steps.replicate(task.init_params(jax.random.PRNGKey(0), None))
  metrics = trainer.evaluate(steps, params, batches)
  assert metrics["mean"] == pytest.approx(float(images.mean()), rel=1e-5)
