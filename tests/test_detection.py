"""Tests of finola_jax/tasks/detection.py and the program experiments/detect.py.

The program runs on canvases written here from tiny IDX items, with the
encoder of a tiny pretrain_masked-style workdir (config.json and one
checkpoint).
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl import app

from experiments import detect
from experiments import make_fashion_detection
from finola_jax import tasks
from finola_jax.data import coco
from finola_jax.tasks import detection
from finola_jax.train import checkpointing
from finola_jax.train import run_config
from finola_jax.train import step as step_lib
from tests import helpers
from tests import test_coco

STRIDE = 4
MAP_SIZE = 8
IMAGE_SIZE = STRIDE * MAP_SIZE


def random_boxes(rng, count):
  """Boxes with positive sizes and centres inside the map."""
  centres = rng.uniform(0, IMAGE_SIZE, (count, 2))
  sizes = rng.uniform(0.5, 40, (count, 2))
  return np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1)


def test_box_coder_round_trip():
  boxes = random_boxes(np.random.default_rng(0), 200).astype(np.float32)
  cells, offsets, log_sizes = detection.encode_boxes(boxes, STRIDE, MAP_SIZE)
  assert np.all((offsets >= 0) & (offsets < 1))
  assert np.all((cells >= 0) & (cells < MAP_SIZE))
  np.testing.assert_allclose(
      detection.decode_boxes(cells, offsets, log_sizes, STRIDE), boxes,
      rtol=1e-5, atol=1e-4)


def test_heatmap_peaks_at_each_box_centre_in_its_class():
  boxes = jnp.array([[0, 0, 8, 8], [16, 12, 32, 20], [4, 4, 6, 6]], jnp.float32)
  heat = detection.heatmap_targets(boxes, jnp.array([2, 0, 1]),
                                   jnp.array([1.0, 1.0, 0.0]), stride=STRIDE,
                                   map_size=MAP_SIZE, num_classes=3)
  assert heat.shape == (MAP_SIZE, MAP_SIZE, 3)
  peaks = np.argwhere(np.asarray(heat) == 1.0)
  np.testing.assert_array_equal(peaks, [[1, 1, 2], [4, 6, 0]])  # (row, col, k)
  assert not np.asarray(heat[..., 1]).any()  # the padding box adds nothing


def test_decoding_perfect_outputs_gives_the_boxes():
  boxes = jnp.array([[[2, 3, 10, 9], [17, 5, 30, 27]]], jnp.float32)
  labels, mask = jnp.array([[1, 0]]), jnp.ones((1, 2))
  heat = detection.heatmap_targets(boxes[0], labels[0], mask[0], stride=STRIDE,
                                   map_size=MAP_SIZE, num_classes=2)
  logits = jnp.log(heat + 1e-6) - jnp.log1p(-heat + 1e-6)
  cells, offsets, log_sizes = detection.encode_boxes(boxes[0], STRIDE, MAP_SIZE)
  regression = jnp.zeros((MAP_SIZE, MAP_SIZE, 4)).at[
      cells[:, 1], cells[:, 0]].set(jnp.concatenate([offsets, log_sizes], -1))
  found, scores, classes = detection.decode_detections(
      logits[None], regression[None], stride=STRIDE, top_k=2,
      image_size=IMAGE_SIZE)
  order = np.argsort(np.asarray(classes[0]))[::-1]  # class 1 first
  np.testing.assert_allclose(found[0][order], boxes[0], atol=1e-4)
  np.testing.assert_array_equal(classes[0][order], [1, 0])
  np.testing.assert_allclose(scores[0], 1.0, atol=1e-5)


# ------------------------------------------------------------------ COCOeval ---


def test_coco_ap_of_perfect_and_shifted_predictions(tmp_path):
  directory = test_coco.write_dataset(tmp_path, test_coco.fixture())
  split = coco.load_split(directory, "train2017")
  truth = coco.read_ground_truth(split.annotation_file)

  def results(shift):
    return [{"image_id": 7, "category_id": split.category_ids[label],
             "bbox": [x0 + shift, y0, x1 - x0, y1 - y0], "score": 0.9}
            for (x0, y0, x1, y1), label in zip(split.boxes[0], split.labels[0])]

  perfect = detect.coco_metrics(truth, results(0.0), split.image_ids)
  assert perfect["AP"] == pytest.approx(1.0)
  assert perfect["AP50"] == pytest.approx(1.0)
  # The detector's boxes are in letterboxed input pixels (the 20×10 image
  # scaled by 2 into 40×40); coco_results maps them back.
  boxes = split.boxes[0] * 2
  detections = {"index": np.array([0]), "boxes": boxes[None],
                "scores": np.array([[0.9, 0.8]]),
                "classes": split.labels[0][None]}
  mapped = detect.coco_results(
      detections, coco.DetectionSplit.create(split, image_size=40, max_boxes=2))
  np.testing.assert_allclose([r["bbox"] for r in mapped],
                             [r["bbox"] for r in results(0.0)])
  assert detect.coco_metrics(truth, mapped, [7])["AP"] == pytest.approx(1.0)
  shifted = detect.coco_metrics(truth, results(2.0), split.image_ids)
  assert shifted["AP"] < 0.9
  assert set(perfect) == set(detect.METRICS)


# ---------------------------------------------------------- frozen backbone ---


def detect_config(**overrides):
  config = helpers.load_config("detect_fashion_mnist")
  config.update(dict(steps=4, warmup_steps=1))
  config.update(overrides)
  return config


@pytest.mark.parametrize("freeze", [True, False])
def test_only_an_unfrozen_backbone_is_updated(freeze):
  """The optimizer alone (the program test trains a frozen one end to end)."""
  config = detect_config(freeze_backbone=freeze, weight_decay=0.1)
  task = detection.DetectionTask(
      config, detection.Backbone(None, {}, STRIDE), num_classes=3)
  params = {"backbone": {"w": jnp.ones((3, 2))}, "head": {"w": jnp.ones(2)}}
  tx = task.optimizer(config)
  state = tx.init(params)
  for _ in range(2):  # the warm-up's first rate is 0
    updates, state = tx.update(jax.tree_util.tree_map(jnp.ones_like, params),
                               state, params)
  assert np.all(np.asarray(updates["head"]["w"]) != 0)
  backbone = np.asarray(updates["backbone"]["w"])
  if freeze:
    assert np.all(backbone == 0)  # no gradient step, no weight decay
  else:
    # The slower rate: encoder_lr_scale times the head's step.
    np.testing.assert_allclose(
        backbone, config.encoder_lr_scale * updates["head"]["w"][0], rtol=1e-5)


# ------------------------------------------------------------------ program ---


@pytest.fixture(scope="module")
def pretrained_workdir(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("pretrained"))
  config = helpers.tiny_config("pretrain_masked")
  run_config.write(workdir, config)
  state = step_lib.create_train_state(tasks.create_task(config), config)
  manager = checkpointing.create_manager(workdir)
  checkpointing.save(manager, 3, state.replace(step=3))
  manager.close()
  return workdir


@pytest.fixture(scope="module")
def canvases(tmp_path_factory):
  root = tmp_path_factory.mktemp("canvases")
  items = test_coco.write_items(root / "idx", with_test=True)
  out = str(root / "coco")
  make_fashion_detection.make_dataset(items, out, seed=0, num_train=16,
                                      num_val=6, size=IMAGE_SIZE)
  return out


def program_args(workdir, canvases, steps=12):
  return [f"--workdir={workdir}",
          "--config=experiments/configs/detect_fashion_mnist.py",
          f"--config.dataset=coco:{canvases}", f"--config.steps={steps}",
          f"--config.image_size={IMAGE_SIZE}", "--config.batch_size=4",
          "--config.head_width=8", "--config.warmup_steps=1",
          "--config.log_every=1", "--config.checkpoint_every=6",
          "--config.num_images=2", "--config.learning_rate=0.01"]


def test_program_trains_scores_and_keeps_the_backbone(pretrained_workdir,
                                                      canvases, tmp_path):
  workdir = str(tmp_path / "det")
  stdout = helpers.run_program(detect, program_args(workdir, canvases) + [
      f"--pretrained_workdir={pretrained_workdir}"])
  assert "COCO box AP on val2017 (6 images, step 12)" in stdout
  losses = [r["train/loss"] for r in helpers.read_metrics(workdir)
            if "train/loss" in r]
  assert len(losses) == 12 and losses[-1] < 0.5 * losses[0]
  with open(os.path.join(workdir, "detection.json")) as f:
    result = json.load(f)
  for key in detect.METRICS:
    assert result[key] is None or 0.0 <= result[key] <= 1.0
  assert os.path.isfile(os.path.join(workdir, "images",
                                     "detections_0000012.png"))
  # The frozen encoder is the pre-trained one, bit for bit.
  _, trained = checkpointing.restore_latest_params(workdir)
  _, pretrained = checkpointing.restore_latest_params(pretrained_workdir)
  helpers.assert_trees_equal(trained["backbone"], pretrained["encoder"])
  # --eval_only scores the same checkpoint again, without the pre-training;
  # the same command again resumes the finished run (its recorded backbone
  # config agrees) and scores it again.
  again = helpers.run_program(detect, [f"--workdir={workdir}", "--eval_only"])
  assert stdout.splitlines()[-1] == again.splitlines()[-1]
  resumed = helpers.run_program(detect, program_args(workdir, canvases) + [
      f"--pretrained_workdir={pretrained_workdir}"])
  assert stdout.splitlines()[-1] == resumed.splitlines()[-1]


def test_program_refuses_bad_input_before_writing(pretrained_workdir, tmp_path):
  workdir = tmp_path / "det"
  with pytest.raises(app.UsageError, match="pretrained_workdir is needed"):
    helpers.run_program(detect, program_args(workdir, tmp_path))
  with pytest.raises(app.UsageError, match="instances_train2017.json"):
    helpers.run_program(detect, program_args(workdir, tmp_path) + [
        f"--pretrained_workdir={pretrained_workdir}"])
  # The source's check names the file and the entry.
  change, pattern = test_coco.MALFORMED["unknown_category"]
  malformed = test_coco.write_both_splits(tmp_path / "malformed",
                                          evaluation=change(test_coco.fixture()))
  with pytest.raises(app.UsageError,
                     match=r"instances_val2017.json: " + pattern):
    helpers.run_program(detect, program_args(workdir, malformed) + [
        f"--pretrained_workdir={pretrained_workdir}"])
  # A dataset without boxes.
  with pytest.raises(app.UsageError, match="'embedded'.*coco:DIR"):
    helpers.run_program(detect, program_args(workdir, tmp_path) + [
        "--config.dataset=embedded",
        f"--pretrained_workdir={pretrained_workdir}"])
  assert not workdir.exists()
