"""Tests of masked FINOLA: masking, the masked loss, and pretrain_masked.py.

The model tests record what the encoder and the decoder receive (flax
``intercept_methods``) on a tiny model, so "the encoder never sees a masked
pixel" is checked on the real forward pass.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import finola_jax
from experiments import pretrain_masked
from finola_jax import tasks
from finola_jax.models import masked
from finola_jax.runner import trainer
from finola_jax.tasks import masked as masked_tasks
from finola_jax.train import run_config
from finola_jax.train import step as step_lib
from tests import helpers

SIZE = helpers.TINY_MODEL["image_size"]
STRIDE = helpers.TINY_MODEL["stride"]
MAP = SIZE // STRIDE


def _quadrant(corner: int, size: int):
  """Row and column slices of quadrant ``finola_jax.CORNERS[corner]``."""
  half = size // 2
  rows = slice(0, half) if corner < 2 else slice(half, size)
  cols = slice(0, half) if corner % 2 == 0 else slice(half, size)
  return rows, cols


def _images(count=2, seed=0):
  return jax.random.uniform(jax.random.PRNGKey(seed), (count, SIZE, SIZE, 3))


def _noise(shape, seed=1):
  return 5.0 * jax.random.normal(jax.random.PRNGKey(seed), shape)


def masked_task(masking="quadrant", **overrides):
  return tasks.create_task(helpers.tiny_config(
      "pretrain_masked", masking=masking, **overrides))


@pytest.fixture(scope="module")
def params():
  return helpers.initial_params(masked_task())


def _traced(model, method):
  """Jitted ``(params, images, mask) → (prediction, seen)``; ``seen`` holds the
  encoder's input and output and the decoder's input."""

  def apply(params, images, mask):
    seen = {}

    def record(next_fun, args, kwargs, context):
      out = next_fun(*args, **kwargs)
      if context.method_name == "__call__" and context.module.name in (
          "encoder", "upsampler"):
        seen[context.module.name] = (args[0], out)
      return out

    with nn.intercept_methods(record):
      prediction = model.apply({"params": params}, images, mask, method=method)
    return prediction, {"encoder_input": seen["encoder"][0],
                        "encoder_output": seen["encoder"][1],
                        "feature_map": seen["upsampler"][0]}

  return jax.jit(apply)


@pytest.fixture(scope="module")
def quadrant_forward():
  return _traced(masked_task().model, masked.MaskedFinola.predict_from_quadrant)


@pytest.fixture(scope="module")
def patches_forward():
  return _traced(masked_task("random").model,
                 masked.MaskedFinola.predict_from_patches)


def _assert_same(a, b):
  for key in a:
    np.testing.assert_array_equal(np.asarray(b[key]), np.asarray(a[key]), err_msg=key)


# ------------------------------------------------------------------ masking ---


def test_quadrant_mask_of_every_corner():
  height, width = 4, 6  # Not square: rows and columns cannot be swapped.
  mask = np.asarray(masked.quadrant_mask(jnp.arange(4), height, width))
  assert mask.shape == (4, height, width, 1)
  images = np.arange(height * width).reshape(1, height, width, 1)
  views = np.asarray(masked.quadrant_views(jnp.asarray(images)))
  for corner, name in enumerate(finola_jax.CORNERS):
    rows = slice(0, 2) if name.startswith("top") else slice(2, 4)
    cols = slice(0, 3) if name.endswith("left") else slice(3, 6)
    expected = np.ones((height, width))
    expected[rows, cols] = 0  # The visible quadrant.
    np.testing.assert_array_equal(mask[corner, ..., 0], expected, err_msg=name)
    np.testing.assert_array_equal(views[corner, 0], images[0, rows, cols],
                                  err_msg=name)


@pytest.mark.parametrize("corner", range(4), ids=finola_jax.CORNERS)
def test_quadrant_encoder_never_sees_masked_pixels(params, quadrant_forward,
                                                    corner):
  images = _images()
  corners = jnp.full(images.shape[0], corner)
  mask = masked.quadrant_mask(corners, SIZE, SIZE)
  rows, cols = _quadrant(corner, SIZE)
  prediction, seen = quadrant_forward(params, images, corners)

  # The encoder receives exactly the visible quadrant.
  np.testing.assert_array_equal(seen["encoder_input"], images[:, rows, cols])
  # The completed map keeps the encoder's block in the visible corner.
  block_rows, block_cols = _quadrant(corner, MAP)
  np.testing.assert_allclose(seen["feature_map"][:, block_rows, block_cols],
                             seen["encoder_output"], rtol=1e-6, atol=1e-6)
  assert seen["feature_map"].shape == (2, MAP, MAP, helpers.TINY_MODEL["channels"])

  # Masked pixels changed: nothing the model computes changes.
  hidden = quadrant_forward(params, images + mask * _noise(images.shape), corners)
  _assert_same({"prediction": prediction, **seen},
               {"prediction": hidden[0], **hidden[1]})
  # Visible pixels changed: the encoder's output does (the test can fail).
  shown = quadrant_forward(params, images + (1 - mask) * _noise(images.shape),
                           corners)
  assert not np.allclose(shown[1]["encoder_output"], seen["encoder_output"])


@pytest.mark.parametrize("path", ["vertical_first", "horizontal_first", "average"])
@pytest.mark.parametrize("extrapolation", ["finola", "linear"])
def test_completion_from_each_corner_equals_extrapolate_from_it(
    params, extrapolation, path):
  """Each example's completion, computed for its own corner only, is
  ``finola_jax.extrapolate`` from that corner (what was computed for all four
  corners before, keeping one); the block stays as it is."""
  model = masked_task(extrapolation=extrapolation, path=path).model
  channels = helpers.TINY_MODEL["channels"]
  block = jax.random.normal(jax.random.PRNGKey(2), (4, MAP // 2, MAP // 2, channels))
  corners = jnp.array([2, 0, 3, 1])  # Every corner, in a mixed order.
  complete = jax.jit(lambda params, block, corners: model.apply(
      {"params": params}, block, corners,
      method=masked.MaskedFinola.complete_from_corner))
  full = complete(params, block, corners)
  assert full.shape == (4, MAP, MAP, channels) and np.all(np.isfinite(full))
  A, B = params["matrices"]["A"], params["matrices"]["B"]
  for b, corner in enumerate(np.asarray(corners)):
    expected = finola_jax.extrapolate(
        block[b], A, B, MAP, MAP, corner=finola_jax.CORNERS[corner], path=path,
        normalized=extrapolation == "finola")
    np.testing.assert_allclose(full[b], expected, rtol=1e-5, atol=1e-5,
                               err_msg=f"{b}: {finola_jax.CORNERS[corner]}")
    rows, cols = _quadrant(corner, MAP)
    np.testing.assert_array_equal(full[b, rows, cols], block[b])

  # Two walks per path (vertical, horizontal), not one pair per corner.
  jaxpr = jax.make_jaxpr(complete)(params, block, corners)
  scans = str(jaxpr).count("scan[")
  assert scans == (4 if path == "average" else 2), scans


def test_random_visible_patches():
  keys = jax.random.split(jax.random.PRNGKey(0), 8)
  visible = np.asarray(masked_tasks.random_visible(keys, MAP, 0.75))
  assert visible.shape == (8, MAP, MAP)
  assert set(np.unique(visible)) == {0.0, 1.0}
  np.testing.assert_array_equal(visible.sum(axis=(1, 2)), round(0.25 * MAP * MAP))
  assert len({v.tobytes() for v in visible}) == 8  # A mask per example.
  np.testing.assert_array_equal(
      visible, masked_tasks.random_visible(keys, MAP, 0.75))  # Seeded.
  # 1 and 63 of the 64 patches of an 8×8 map: the extremes allowed.
  for ratio, count in ((1 - 1 / 64, 1), (1 / 64, 63)):
    visible = masked_tasks.random_visible(keys, 8, ratio)
    np.testing.assert_array_equal(np.sum(visible, axis=(1, 2)), count)


@pytest.mark.parametrize("ratio, visible", [(0.005, 64), (0.999, 0)])
def test_mask_ratio_must_leave_a_patch_visible_and_one_masked(ratio, visible):
  """0.005 on an 8×8 map would leave all 64 patches visible (loss 0/0:
  NaN); 0.999 none."""
  message = (rf"config.mask_ratio must leave between 1 and 63 of the 64 "
             rf"patches of the 8×8 map visible .*it leaves {visible}\)")
  with pytest.raises(run_config.ConfigError, match=message):
    masked_tasks.random_visible(jax.random.split(jax.random.PRNGKey(0), 2),
                                8, ratio)
  with pytest.raises(run_config.ConfigError, match=message):
    masked_task("random", mask_ratio=ratio)
  masked_task("quadrant", mask_ratio=ratio)  # Unused there: not checked.


def test_random_masking_encoder_never_sees_masked_patches(params,
                                                          patches_forward):
  images = _images()
  keys = jax.random.split(jax.random.PRNGKey(3), images.shape[0])
  visible = masked_tasks.random_visible(keys, MAP, 0.75)
  pixel_visible = masked.patch_to_pixel_mask(visible, STRIDE)
  assert pixel_visible.shape == (2, SIZE, SIZE, 1)
  prediction, seen = patches_forward(params, images, visible)

  np.testing.assert_array_equal(seen["encoder_input"], images * pixel_visible)
  # q (unrolled from the centre) pools the features of visible positions.
  weights = np.asarray(visible)[..., None]
  pooled = (np.sum(np.asarray(seen["encoder_output"]) * weights, axis=(1, 2)) /
            weights.sum(axis=(1, 2)))
  np.testing.assert_allclose(seen["feature_map"][:, MAP // 2, MAP // 2], pooled,
                             rtol=1e-5, atol=1e-6)

  hidden = patches_forward(
      params, images + (1 - pixel_visible) * _noise(images.shape), visible)
  _assert_same({"prediction": prediction, **seen},
               {"prediction": hidden[0], **hidden[1]})
  shown = patches_forward(params, images + pixel_visible * _noise(images.shape),
                          visible)
  assert not np.allclose(shown[1]["feature_map"][:, MAP // 2, MAP // 2], pooled)


# --------------------------------------------------------------------- loss ---


def test_masked_mse_counts_masked_pixels_only():
  prediction, target = _images(seed=4), _images(seed=5)
  mask = masked.quadrant_mask(jnp.array([0, 3]), SIZE, SIZE)
  loss = masked_tasks.masked_mse(prediction, target, mask)
  expected = [np.sum(np.square(prediction[b] - target[b]) * mask[b]) /
              (np.sum(mask[b]) * 3) for b in range(2)]
  np.testing.assert_allclose(loss, expected, rtol=1e-5)
  noise = _noise(prediction.shape)
  for changed in (masked_tasks.masked_mse(prediction + (1 - mask) * noise, target, mask),
                  masked_tasks.masked_mse(prediction, target + (1 - mask) * noise, mask)):
    np.testing.assert_allclose(changed, loss, rtol=1e-6)
  changed = masked_tasks.masked_mse(prediction + mask * noise, target, mask)
  assert np.all(np.asarray(changed) > np.asarray(loss))


@pytest.mark.parametrize("masking", ["quadrant", "random"])
def test_loss_is_zero_when_only_visible_pixels_are_wrong(params, masking):
  """The images' masked pixels replaced by the model's own prediction: the
  prediction is the same (the encoder never saw them) and is now right on
  every masked pixel, wrong on visible ones: the loss is 0."""
  task = masked_task(masking)
  images = _images()
  keys = jax.random.split(jax.random.PRNGKey(6), images.shape[0])
  predict_and_loss = jax.jit(lambda params, images, keys: (
      task.predict(params, images, keys), task.loss(params, {"image": images}, keys)))
  (prediction, mask, visible), (loss, metrics) = predict_and_loss(
      params, images, keys)
  np.testing.assert_array_equal(mask + visible, 1.0)
  np.testing.assert_allclose(np.mean(mask, axis=(1, 2, 3)), 0.75)
  np.testing.assert_allclose(
      loss, jnp.mean(masked_tasks.masked_mse(prediction, images, mask)), rtol=1e-5)
  assert metrics["masked_mse"] == loss

  completed = images * visible + prediction * mask
  (again, _, _), (loss, _) = predict_and_loss(params, completed, keys)
  np.testing.assert_array_equal(again, prediction)
  assert float(loss) < 1e-10
  assert float(jnp.mean(jnp.square(prediction - completed))) > 1e-3


def test_norm_pix_targets():
  patch = 4
  images = np.asarray(_images(seed=7))
  targets = np.asarray(masked_tasks.patch_normalize(images, patch))
  assert targets.shape == images.shape
  patches = lambda x: x.reshape(2, SIZE // patch, patch, SIZE // patch, patch, 3)
  np.testing.assert_allclose(patches(targets).mean(axis=(2, 4, 5)), 0, atol=1e-5)
  np.testing.assert_allclose(patches(targets).var(axis=(2, 4, 5)), 1, atol=1e-3)
  # Per-patch brightness and contrast do not change the target.
  rng = np.random.default_rng(0)
  shape = (2, SIZE // patch, 1, SIZE // patch, 1, 1)
  scaled = (patches(images) * rng.uniform(0.5, 2, shape) +
            rng.uniform(-1, 1, shape)).reshape(images.shape)
  np.testing.assert_allclose(masked_tasks.patch_normalize(scaled, patch),
                             targets, atol=2e-4)
  # A flat patch: (about) zeros, not NaN.
  flat = np.asarray(masked_tasks.patch_normalize(np.full_like(images, 0.3), patch))
  np.testing.assert_allclose(flat, 0.0, atol=1e-4)

  normalized = masked_task(norm_pix_loss=True, patch_size=patch)
  np.testing.assert_array_equal(normalized.target(images), targets)
  assert masked_task(norm_pix_loss=False).target(images) is images


class _PerfectPrediction(masked_tasks.MaskedTask):
  """Predicts the loss's target exactly."""

  def predict_quadrant(self, params, images, corners):
    _, mask, visible = super().predict_quadrant(params, images, corners)
    return self.target(images), mask, visible


def test_pictures_of_per_patch_normalized_predictions_are_in_pixels(params):
  config = helpers.tiny_config("pretrain_masked", norm_pix_loss=True,
                               patch_size=4)
  task = _PerfectPrediction(config)
  images = _images()
  batch = {"image": images, "index": jnp.arange(2)}
  _, completed, original = task.visualize(
      params, batch, step_lib.evaluation_keys(batch["index"]))
  np.testing.assert_allclose(completed, original, atol=1e-5)
  np.testing.assert_allclose(
      masked_tasks.patch_denormalize(masked_tasks.patch_normalize(images, 4),
                                     images, 4), images, atol=1e-5)


@pytest.mark.parametrize("norm_pix_loss, keys", [
    (False, {"masked_loss", "masked_psnr", "mean_colour_psnr"}),
    (True, {"masked_loss"}),  # PSNR is in pixel space.
])
def test_eval_metrics(params, norm_pix_loss, keys):
  task = masked_task(norm_pix_loss=norm_pix_loss, patch_size=4)
  batch = {"image": _images(), "index": jnp.arange(2)}
  shapes = jax.eval_shape(task.eval_metrics, params, batch,
                          step_lib.evaluation_keys(batch["index"]))
  assert set(shapes) == keys
  assert all(s.shape == (2,) for s in shapes.values())


def test_random_masking_evaluation_does_not_depend_on_the_device_layout(params):
  """Evaluation masks are keyed by each image's index in the split: 1, 2 or
  4 devices score the same. (Keyed by the position in each device's batch,
  4 devices × 1 image gave every image the same mask.)"""
  task = masked_task("random")
  images = np.asarray(_images(count=4, seed=8))
  batch = {"image": images, "index": np.arange(4, dtype=np.int32),
           "mask": np.ones(4, np.float32)}
  results = []
  for devices in (1, 2, 4):
    steps = step_lib.ParallelSteps(task, 0, devices=jax.local_devices()[:devices])
    device_batch = {k: v.reshape((devices, -1) + v.shape[1:])
                    for k, v in batch.items()}
    results.append(trainer.evaluate(steps, steps.replicate(params),
                                    [device_batch]))
  for result in results[1:]:
    for key, value in results[0].items():
      assert result[key] == pytest.approx(value, rel=1e-5), key


# ----------------------------------------------------------------- program ---


def test_killed_pretraining_resumes(tmp_path, caplog):
  helpers.check_kill_and_resume(
      pretrain_masked, helpers.tiny_config("pretrain_masked", masking="random"),
      str(tmp_path), caplog)
