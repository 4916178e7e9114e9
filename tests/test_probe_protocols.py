"""Tests of finola_jax/tasks/probe.py: the linear, tran1 and finetune protocols.

A tiny masked-FINOLA encoder (16×16 images, 8 channels on an 8×8 map) probes
a synthetic three-class set: dark, light and half-light images, told apart
by any encoder that keeps brightness.
"""

import json
import shutil
import tempfile
from unittest import mock

import chex
import jax
import numpy as np
from absl.testing import absltest
from absl.testing import parameterized

from finola_jax import tasks
from finola_jax.models import masked
from finola_jax.tasks import probe
from tests import helpers

MODEL = tasks.create_task(helpers.tiny_config("pretrain_masked")).model
SIZE = helpers.TINY_MODEL["image_size"]
MAP = SIZE // helpers.TINY_MODEL["stride"]
CHANNELS = helpers.TINY_MODEL["channels"]
NUM_CLASSES = 3
FAST = dict(steps=25, batch_size=8, learning_rate=3e-2, warmup_steps=2)


def synthetic_set(count: int, seed: int):
  """uint8 greyscale ``[count, 16, 16]``, labels: 0 dark, 1 light, 2 left half light."""
  rng = np.random.default_rng(seed)
  labels = np.arange(count) % NUM_CLASSES
  images = rng.integers(0, 40, (count, SIZE, SIZE)).astype(np.uint8)
  images[labels == 1] += 200
  images[labels == 2, :, :SIZE // 2] += 200
  return images, labels


def to_rgb(images: np.ndarray) -> np.ndarray:
  """The ``prepare`` of the tests: uint8 greyscale → float RGB."""
  return np.repeat(images[..., None].astype(np.float32) / 255.0, 3, axis=-1)


def encoder_params(seed: int = 0):
  return MODEL.init(jax.random.PRNGKey(seed), np.zeros((1, SIZE, SIZE, 3)),
                    method=masked.MaskedFinola.features)["params"]["encoder"]


def run(protocol: str, params=None, workdir=None,
        **overrides) -> probe.ProbeResult:
  train, evaluation = synthetic_set(24, seed=0), synthetic_set(9, seed=1)
  params = encoder_params() if params is None else params
  return probe.run_protocol(
      probe.masked_finola_encoder(MODEL), params,
      train_inputs=train[0], train_labels=train[1], eval_inputs=evaluation[0],
      eval_labels=evaluation[1], num_classes=NUM_CLASSES,
      config=probe.ProbeConfig(protocol=protocol, **dict(FAST, **overrides)),
      prepare=to_rgb, workdir=workdir, checkpoint_every=10)


class Killed(Exception):
  """Stands for the signal that stops a probe mid-training."""


def differs(tree_a, tree_b) -> bool:
  return any(not np.array_equal(a, b) for a, b in zip(
      jax.tree_util.tree_leaves(tree_a), jax.tree_util.tree_leaves(tree_b)))


class ProtocolTest(helpers.NoX64LeakTestCase, parameterized.TestCase):

  @parameterized.parameters(*probe.PROTOCOLS)
  def test_learns_the_synthetic_set(self, protocol):
    result = run(protocol)
    self.assertEqual(result.protocol, protocol)
    self.assertEqual((result.num_train, result.num_eval), (24, 9))
    self.assertEqual(result.train_top1, 1.0)
    self.assertEqual(result.top1, 1.0)

  @parameterized.parameters(("linear",), ("tran1",))
  def test_frozen_protocols_leave_the_encoder_alone(self, protocol):
    params = encoder_params()
    before = jax.tree_util.tree_map(np.array, params)
    result = run(protocol, params)
    self.assertIs(result.encoder_params, params)
    chex.assert_trees_all_equal(params, before)

  def test_finetune_trains_the_encoder(self):
    params = encoder_params()
    before = jax.tree_util.tree_map(np.array, params)
    result = run("finetune", params)
    chex.assert_trees_all_equal(params, before)  # The input is not modified.
    chex.assert_trees_all_equal_shapes_and_dtypes(result.encoder_params, params)
    chex.assert_tree_all_finite(result.encoder_params)
    self.assertTrue(differs(result.encoder_params, params))

  def test_finetune_encoder_learns_slower_than_the_head(self):
    slow = run("finetune", encoder_lr_scale=1e-3).encoder_params
    fast = run("finetune", encoder_lr_scale=1.0).encoder_params
    initial = encoder_params()
    change = lambda tree: sum(float(np.sum(np.abs(np.asarray(a) - b)))
                              for a, b in zip(jax.tree_util.tree_leaves(tree),
                                              jax.tree_util.tree_leaves(initial)))
    self.assertLess(change(slow), 0.1 * change(fast))

  def test_head_shapes(self):
    linear = run("linear", grid=2).head_params
    chex.assert_shape(linear["head"]["Dense_0"]["kernel"],
                      (2 * 2 * CHANNELS, NUM_CLASSES))
    tran1 = run("tran1", grid=MAP, num_heads=2, mlp_ratio=3).head_params["head"]
    chex.assert_shape(tran1["position"], (MAP * MAP, CHANNELS))
    pooled = run("tran1", grid=2).head_params["head"]
    chex.assert_shape(pooled["position"], (2 * 2, CHANNELS))
    chex.assert_shape(tran1["Dense_0"]["kernel"], (CHANNELS, 3 * CHANNELS))
    chex.assert_shape(tran1["Dense_2"]["kernel"], (CHANNELS, NUM_CLASSES))
    finetune = run("finetune").head_params
    chex.assert_shape(finetune["head"]["Dense_0"]["kernel"],
                      (CHANNELS, NUM_CLASSES))

  def test_raw_pixels_baseline(self):
    train, evaluation = synthetic_set(24, seed=0), synthetic_set(9, seed=1)
    result = probe.run_protocol(
        probe.pixels, {}, train_inputs=train[0], train_labels=train[1],
        eval_inputs=evaluation[0], eval_labels=evaluation[1],
        num_classes=NUM_CLASSES,
        config=probe.ProbeConfig(grid=SIZE, **FAST), prepare=to_rgb)
    chex.assert_shape(result.head_params["head"]["Dense_0"]["kernel"],
                      (SIZE * SIZE * 3, NUM_CLASSES))
    self.assertEqual(result.top1, 1.0)

  def test_deterministic_given_the_seed(self):
    # The linear protocol: the seed reaches the same head initialization and
    # batch order in every protocol, and linear compiles quickest.
    first, second = run("linear"), run("linear")
    chex.assert_trees_all_equal(first.head_params, second.head_params)
    self.assertTrue(differs(first.head_params, run("linear", seed=1).head_params))

  def test_a_killed_probe_resumes_to_the_same_result(self):
    # Fine-tuning: the checkpoint must carry the encoder and both Adam states.
    workdir = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, workdir)
    uninterrupted = run("finetune")
    killed_at = 23  # After the checkpoints at steps 10 and 20.
    original = probe._step_indices

    def killed(seed, step, *args):
      if step == killed_at:
        raise Killed
      return original(seed, step, *args)

    with mock.patch.object(probe, "_step_indices", killed):
      with self.assertRaises(Killed):
        run("finetune", workdir=workdir)
    resumed_steps = []

    def counted(seed, step, *args):
      resumed_steps.append(step)
      return original(seed, step, *args)

    with mock.patch.object(probe, "_step_indices", counted):
      resumed = run("finetune", workdir=workdir)
    self.assertEqual(resumed_steps, list(range(20, FAST["steps"])))
    chex.assert_trees_all_close(resumed.head_params, uninterrupted.head_params,
                                rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(resumed.encoder_params,
                                uninterrupted.encoder_params, rtol=1e-5,
                                atol=1e-6)
    self.assertEqual(resumed.top1, uninterrupted.top1)

  @parameterized.parameters(("linear", 24 + 9), ("finetune", 5 + 25 * 8 + 5 + 9))
  def test_examples_the_encoder_sees(self, protocol, expected):
    # Frozen: one pass over each split. Fine-tuning: the monitored examples
    # (statistics, then train_top1), steps × batch_size, one evaluation pass.
    seen = []

    def counting_prepare(inputs):
      seen.append(len(inputs))
      return to_rgb(inputs)

    train, evaluation = synthetic_set(24, seed=0), synthetic_set(9, seed=1)
    probe.run_protocol(
        probe.masked_finola_encoder(MODEL), encoder_params(),
        train_inputs=train[0], train_labels=train[1], eval_inputs=evaluation[0],
        eval_labels=evaluation[1], num_classes=NUM_CLASSES,
        config=probe.ProbeConfig(protocol=protocol, monitor_examples=5, **FAST),
        prepare=counting_prepare)
    self.assertEqual(sum(seen), expected)

  def test_record_is_json(self):
    record = json.loads(json.dumps(run("linear").record()))
    self.assertEqual(record, {"protocol": "linear", "top1": 1.0,
                              "train_top1": 1.0, "num_train": 24,
                              "num_eval": 9})


class PiecesTest(parameterized.TestCase):

  def test_pool_grid(self):
    feature_map = np.arange(2 * 4 * 4 * 3, dtype=np.float32).reshape(2, 4, 4, 3)
    np.testing.assert_allclose(probe.pool_grid(feature_map, 1)[:, 0, 0],
                               feature_map.mean(axis=(1, 2)))
    np.testing.assert_allclose(probe.pool_grid(feature_map, 4), feature_map)
    np.testing.assert_allclose(probe.pool_grid(feature_map, 2)[1, 0, 1],
                               feature_map[1, :2, 2:].mean(axis=(0, 1)))
    with self.assertRaisesRegex(ValueError, "grid=3 must divide"):
      probe.pool_grid(feature_map, 3)

  def test_readouts(self):
    feature_map = np.ones((2, 4, 4, 3), np.float32)
    chex.assert_shape(probe.linear_readout(feature_map, 2), (2, 12))
    chex.assert_shape(probe.token_readout(feature_map, 4), (2, 16, 3))
    np.testing.assert_allclose(probe.token_readout(feature_map, 1),
                               np.ones((2, 1, 3)))

  @parameterized.named_parameters(
      ("protocol", dict(protocol="knn"), "protocol must be one of"),
      ("steps", dict(steps=0), "steps must be >= 1"),
      ("grid", dict(grid=0), "grid must be >= 1"),
      ("monitor", dict(monitor_examples=0), "monitor_examples must be >= 1"),
      ("learning_rate", dict(learning_rate=0.0), "learning_rate must be > 0"),
      ("encoder_lr_scale", dict(encoder_lr_scale=-1.0), "encoder_lr_scale"),
      ("weight_decay", dict(weight_decay=-1.0), "weight_decay"),
  )
  def test_config_errors(self, overrides, message):
    with self.assertRaisesRegex(ValueError, message):
      probe.ProbeConfig(**overrides)

  def test_label_errors(self):
    images, labels = synthetic_set(6, seed=0)
    kwargs = dict(eval_inputs=images, eval_labels=labels, num_classes=3,
                  config=probe.ProbeConfig(**FAST), prepare=to_rgb)
    with self.assertRaisesRegex(ValueError, r"train: 6 examples .* \(5,\)"):
      probe.run_protocol(probe.pixels, {}, train_inputs=images,
                         train_labels=labels[:5], **kwargs)
    with self.assertRaisesRegex(ValueError, r"labels must be in \[0, 3\)"):
      probe.run_protocol(probe.pixels, {}, train_inputs=images,
                         train_labels=labels + 1, **kwargs)

  def test_heads_that_do_not_divide(self):
    with self.assertRaisesRegex(ValueError, "num_heads=3 must divide the 8"):
      run("tran1", num_heads=3)


if __name__ == "__main__":
  absltest.main()
