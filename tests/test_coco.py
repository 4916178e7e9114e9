"""Tests of finola_jax/data/coco.py, its source (`sources.CocoSource`) and
experiments/make_fashion_detection.py.

Fixtures are tiny COCO-layout directories and IDX files written here.
"""

import json
import os

import numpy as np
import pytest

from experiments import make_fashion_detection
from finola_jax.data import coco
from finola_jax.data import input_pipeline
from finola_jax.data import idx
from finola_jax.data import sources
from tests import helpers
from tests import test_idx

FASHION_MNIST = os.path.join(helpers.REPO_ROOT, "..", "shared", "data",
                             "fashion_mnist")


def fixture(**changes):
  """A valid annotation file's content (two images, one without boxes)."""
  data = {
      "images": [{"id": 7, "file_name": "a.png", "width": 20, "height": 10},
                 {"id": 9, "file_name": "b.png", "width": 10, "height": 10}],
      "annotations": [
          {"id": 1, "image_id": 7, "category_id": 3, "bbox": [2, 1, 6, 4]},
          {"id": 2, "image_id": 7, "category_id": 5, "bbox": [10, 0, 10, 10]},
          {"id": 3, "image_id": 7, "category_id": 5, "bbox": [0, 0, 20, 10],
           "iscrowd": 1}],
      "categories": [{"id": 5, "name": "five"}, {"id": 3, "name": "three"}]}
  data.update(changes)
  return data


def write_dataset(directory, data, split="train2017", images=True):
  for image in data["images"] if images else []:
    pixels = np.full((image["height"], image["width"], 3), image["id"] * 10)
    helpers.write_png(os.path.join(directory, split, image["file_name"]),
                      pixels)
  path = coco.annotation_path(directory, split)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    json.dump(data, f)
  return str(directory)


def layout(devices=2, per_device=2, process_index=0, process_count=1):
  return input_pipeline.batch_layout(devices * per_device * process_count,
                                     process_index, process_count, devices)


def test_reader_on_a_tiny_fixture(tmp_path):
  split = coco.load_split(write_dataset(tmp_path, fixture()), "train2017")
  np.testing.assert_array_equal(split.image_ids, [7, 9])
  assert split.category_ids == (3, 5)
  assert split.category_names == ("three", "five")
  np.testing.assert_array_equal(split.boxes[0], [[2, 1, 8, 5], [10, 0, 20, 10]])
  np.testing.assert_array_equal(split.labels[0], [0, 1])  # the crowd box is out
  assert split.boxes[1].shape == (0, 4)  # no boxes: valid
  np.testing.assert_array_equal(split.sizes, [[10, 20], [10, 10]])


def test_batches_letterbox_pad_and_mask(tmp_path):
  split = coco.load_split(write_dataset(tmp_path, fixture()), "train2017")
  data = coco.DetectionSplit.create(split, image_size=40, max_boxes=3)
  example = data.example(0)
  assert example["image"].shape == (40, 40, 3)
  # 20×10 scaled by 2 to 40×20, padded with black below.
  np.testing.assert_allclose(example["image"][:20], 70 / 255, atol=1e-6)
  np.testing.assert_array_equal(example["image"][20:], 0)
  np.testing.assert_array_equal(example["boxes"][:2],
                                [[4, 2, 16, 10], [20, 0, 40, 20]])
  np.testing.assert_array_equal(example["box_mask"], [1, 1, 0])
  flipped = data.example(0, flip=True)
  np.testing.assert_array_equal(flipped["image"], example["image"][:, ::-1])
  np.testing.assert_array_equal(flipped["boxes"][0], [24, 2, 36, 10])
  with pytest.raises(ValueError, match="raise max_boxes"):
    coco.DetectionSplit.create(split, image_size=40, max_boxes=1)


def test_training_batches_depend_on_seed_and_step_only(tmp_path):
  split = coco.load_split(write_dataset(tmp_path, fixture()), "train2017")
  data = coco.DetectionSplit.create(split, image_size=16, max_boxes=2)
  whole = data.train_batch(5, seed=1, layout=layout(devices=4, per_device=2))
  assert whole["image"].shape == (4, 2, 16, 16, 3)
  assert whole["boxes"].shape == (4, 2, 2, 4)
  halves = [data.train_batch(5, seed=1, layout=layout(1, 4, p, 2))
            for p in range(2)]
  for key in whole:
    np.testing.assert_array_equal(
        whole[key].reshape((-1,) + whole[key].shape[2:]),
        np.concatenate([h[key].reshape((-1,) + h[key].shape[2:])
                        for h in halves]))
  resumed = next(data.train_batches(5, seed=1, layout=layout(4, 2)))
  np.testing.assert_array_equal(resumed["image"], whole["image"])


def test_evaluation_is_one_padded_pass(tmp_path):
  split = coco.load_split(write_dataset(tmp_path, fixture()), "train2017")
  data = coco.DetectionSplit.create(split, image_size=16, max_boxes=2)
  batches = list(data.eval_batches(layout(devices=3, per_device=1)))
  assert len(batches) == 1
  np.testing.assert_array_equal(batches[0]["index"].ravel(), [0, 1, -1])
  np.testing.assert_array_equal(batches[0]["mask"].ravel(), [1, 1, 0])
  np.testing.assert_array_equal(batches[0]["image_id"].ravel(), [7, 9, -1])
  assert not batches[0]["box_mask"][2].any()


def _drop(entries, key):
  return [{k: v for k, v in entry.items() if k != key} for entry in entries]


MALFORMED = {
    "missing_annotation_key": (
        lambda d: dict(d, annotations=_drop(d["annotations"], "bbox")),
        r"annotations\[0\].*has no 'bbox'"),
    "missing_image_key": (
        lambda d: dict(d, images=_drop(d["images"], "width")),
        r"images\[0\].*has no 'width'"),
    "missing_categories": (
        lambda d: {k: v for k, v in d.items() if k != "categories"},
        "no 'categories' list"),
    "box_outside": (
        lambda d: dict(d, annotations=[dict(d["annotations"][0],
                                            bbox=[16, 1, 6, 4])]),
        r"annotations\[0\] \(id 1\): bbox .* outside its image \(id 7, 20×10\)"),
    "box_non_positive": (
        lambda d: dict(d, annotations=[dict(d["annotations"][0],
                                            bbox=[2, 1, 0, 4])]),
        r"annotations\[0\] \(id 1\): bbox .* non-positive size"),
    "unknown_category": (
        lambda d: dict(d, annotations=[dict(d["annotations"][0],
                                            category_id=4)]),
        r"annotations\[0\] \(id 1\) has category_id 4"),
    "unknown_image": (
        lambda d: dict(d, annotations=[dict(d["annotations"][0], image_id=8)]),
        r"annotations\[0\] \(id 1\) refers to image id 8"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED) + ["image_without_file"])
def test_malformed_files_name_the_file_and_entry(tmp_path, case):
  directory = write_dataset(tmp_path, fixture())
  if case == "image_without_file":
    os.remove(os.path.join(directory, "train2017", "b.png"))
    pattern = r"images\[1\] \(id 9\) names 'b.png', which is not in"
  else:
    change, pattern = MALFORMED[case]
    write_dataset(tmp_path, change(fixture()), images=False)
  with pytest.raises(coco.CocoFormatError, match=pattern) as error:
    coco.load_split(directory, "train2017")
  assert "instances_train2017.json" in str(error.value)


def test_a_missing_annotation_file_is_named(tmp_path):
  with pytest.raises(coco.CocoFormatError, match="instances_val2017.json"):
    coco.load_split(str(tmp_path), "val2017")


# ------------------------------------------------------------------ source ---


def write_both_splits(directory, train=None, evaluation=None):
  write_dataset(directory, train or fixture(), coco.TRAIN_SPLIT)
  return write_dataset(directory, evaluation or fixture(), coco.EVAL_SPLIT)


def test_source_serves_detection_splits_by_name(tmp_path):
  directory = write_both_splits(tmp_path)
  os.rename(coco.annotation_path(directory, coco.EVAL_SPLIT),
            coco.annotation_path(directory, "minival"))
  os.rename(os.path.join(directory, coco.EVAL_SPLIT),
            os.path.join(directory, "minival"))
  source = sources.from_name(f"coco:{directory}")
  assert isinstance(source, sources.CocoSource)
  with pytest.raises(sources.DatasetError, match="instances_val2017.json"):
    source.check()
  source = sources.from_name(f"coco:{directory}",
                             splits=(coco.TRAIN_SPLIT, "minival"))
  source.check()
  evaluation = source.detection_split("validation", image_size=16,
                                      max_boxes=2)
  assert evaluation.split.annotation_file.endswith("instances_minival.json")
  np.testing.assert_array_equal(evaluation.split.image_ids, [7, 9])
  with pytest.raises(sources.DatasetError, match="raise max_boxes"):
    source.detection_split("train", image_size=16, max_boxes=1)


def test_source_check_refuses_a_malformed_set_naming_file_and_entry(tmp_path):
  change, pattern = MALFORMED["unknown_category"]
  directory = write_both_splits(tmp_path, evaluation=change(fixture()))
  with pytest.raises(sources.DatasetError, match=pattern) as error:
    sources.from_name(f"coco:{directory}").check()
  assert "instances_val2017.json" in str(error.value)


def test_source_check_refuses_splits_with_different_categories(tmp_path):
  other = fixture(categories=[{"id": 3, "name": "three"},
                              {"id": 5, "name": "five"},
                              {"id": 6, "name": "six"}])
  directory = write_both_splits(tmp_path, evaluation=other)
  with pytest.raises(sources.DatasetError, match="different categories"):
    sources.from_name(f"coco:{directory}").check()


def test_kinds_without_boxes_or_named_splits_say_so(tmp_path):
  with pytest.raises(sources.DatasetError, match="has no boxes.*coco:DIR"):
    sources.from_name("embedded").detection_split("train", image_size=16,
                                                  max_boxes=2)
  with pytest.raises(sources.DatasetError, match="fixed splits"):
    sources.from_name(f"folder:{tmp_path}", splits=("a", "b"))
  with pytest.raises(sources.DatasetError, match="is not a directory"):
    sources.from_name(f"coco:{tmp_path / 'missing'}")


def test_plain_image_batches_are_the_images_without_boxes(tmp_path):
  """Training draws with replacement, a function of (seed, step); evaluation
  is the evaluation split's centre squares in order."""
  dataset = f"coco:{write_both_splits(tmp_path)}"

  def train(start_step, count):
    batches = input_pipeline.create_train_iterator(
        dataset, image_size=8, global_batch_size=8, seed=3,
        start_step=start_step, colour_augmentation=False,
        local_device_count=4)
    return np.stack([next(batches)["image"] for _ in range(count)])

  first = train(0, 3)
  assert first.shape == (3, 4, 2, 8, 8, 3)
  np.testing.assert_array_equal(train(1, 2), first[1:])
  # Every pixel comes from one of the two flat grey images (values 70, 90).
  grey = np.round(first * 255).reshape(-1, 3)
  assert set(np.unique(grey)) <= {70, 90}
  assert len(np.unique(grey)) == 2
  evaluation = list(input_pipeline.create_eval_iterator(
      dataset, image_size=8, global_batch_size=4, local_device_count=4))
  assert len(evaluation) == 1
  np.testing.assert_array_equal(evaluation[0]["index"].ravel(), [0, 1, -1, -1])
  np.testing.assert_allclose(evaluation[0]["image"][0, 0], 70 / 255, atol=1e-6)
  np.testing.assert_allclose(evaluation[0]["image"][1, 0], 90 / 255, atol=1e-6)


# --------------------------------------------------------------- generator ---

TRAIN_VALUE, EVAL_VALUE = 77, 222


def write_items(directory, with_test: bool):
  """12×12 items: training items have pixels ≤ TRAIN_VALUE, evaluated ones
  (t10k, or the held-out sixth without it) EVAL_VALUE."""
  os.makedirs(directory)
  count = 36
  items = np.zeros((count, 12, 12), np.uint8)
  items[:, 2:10, 3:9] = TRAIN_VALUE
  labels = (np.arange(count) % 10).astype(np.uint8)
  if not with_test:
    items[idx.every_nth(count, idx.HOLDOUT_EVERY), 2:10, 3:9] = EVAL_VALUE
  test_idx.write_split(directory, "train", items, labels)
  if with_test:
    test_items = items[:12].copy()
    test_items[:, 2:10, 3:9] = EVAL_VALUE
    test_idx.write_split(directory, "t10k", test_items, labels[:12])
  return str(directory)


@pytest.mark.parametrize("with_test", [True, False])
def test_generator_splits_do_not_share_items(tmp_path, with_test):
  items = write_items(tmp_path / "idx", with_test)
  out = str(tmp_path / "out")
  eval_split = make_fashion_detection.make_dataset(
      items, out, seed=0, num_train=6, num_val=4, size=32)
  assert eval_split == ("t10k" if with_test else "holdout")
  for split, low, high in (("train2017", 1, TRAIN_VALUE),
                           ("val2017", TRAIN_VALUE + 1, EVAL_VALUE)):
    data = coco.load_split(out, split)  # valid COCO
    pixels = np.stack([coco.read_rgb(p) for p in data.paths])
    assert low <= pixels.max() <= high, split
    counts = [len(b) for b in data.boxes]
    assert min(counts) >= 1 and max(counts) <= make_fashion_detection.MAX_ITEMS
    for boxes, path in zip(data.boxes, data.paths):
      canvas = coco.read_rgb(path)[..., 0]
      for x0, y0, x1, y1 in boxes.astype(int):  # tight: edges are non-zero
        assert canvas[y0:y1, x0].any() and canvas[y0:y1, x1 - 1].any()
        assert canvas[y0, x0:x1].any() and canvas[y1 - 1, x0:x1].any()
      for i in range(len(boxes)):
        for j in range(i):
          assert make_fashion_detection.box_iou(
              boxes[i], boxes[j]) <= make_fashion_detection.MAX_IOU


def test_generator_is_deterministic(tmp_path):
  items = write_items(tmp_path / "idx", with_test=True)
  outs = []
  for name, seed in (("a", 3), ("b", 3), ("c", 4)):
    out = str(tmp_path / name)
    if name == "a":  # the command line
      stdout = helpers.run_program(make_fashion_detection, [
          f"--idx={items}", f"--out={out}", f"--seed={seed}",
          "--num_train=4", "--num_val=2", "--size=32"])
      assert "items of the 't10k' split" in stdout
    else:
      make_fashion_detection.make_dataset(items, out, seed=seed, num_train=4,
                                          num_val=2, size=32)
    outs.append(out)

  def contents(out):
    files = sorted(os.path.join(root, f) for root, _, names in os.walk(out)
                   for f in names)
    return [(os.path.relpath(f, out), open(f, "rb").read()) for f in files]

  assert contents(outs[0]) == contents(outs[1])
  assert contents(outs[0]) != contents(outs[2])


def test_fashion_mnist_canvases():
  if not os.path.isdir(FASHION_MNIST):
    pytest.skip(f"Fashion-MNIST IDX files not found at {FASHION_MNIST}.")
  data = idx.load(FASHION_MNIST)
  canvas, boxes, classes, _ = make_fashion_detection.make_canvas(
      data.train_images, data.train_labels, 64, np.random.default_rng(0))
  assert canvas.shape == (64, 64) and 1 <= len(boxes) <= 4
  assert all(0 <= c < 10 for c in classes)
