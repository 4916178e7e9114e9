"""Detection on TFDS's coco/2017 (`sources.TfdsDetectionSplit`) and
experiments/detect.py on it.

TFDS is mocked (`helpers.mock_tfds_coco`: `tfds.testing.mock_data` serving
valid COCO examples); the expected boxes are computed here from the mocked
examples' normalized boxes.
"""

import json
import os

import numpy as np
import pytest
from absl import app

from experiments import detect
from finola_jax.data import coco
from finola_jax.data import sources
from tests import helpers
from tests import test_coco
from tests import test_detection
# pylint: disable-next=unused-import
from tests.test_detection import pretrained_workdir

IMAGE_SIZE = 48
MAX_BOXES = 3
LAYOUT = test_coco.layout(devices=2, per_device=2)  # 5 images: 2 batches


@pytest.fixture(scope="module")
def metadata_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture
def data_dir(metadata_dir):
  """Mocked for one test at a time: the others see TFDS as it is."""
  with helpers.mock_tfds_coco(metadata_dir) as path:
    yield path


def detection_split(data_dir, split, max_boxes=MAX_BOXES):
  source = sources.from_name(helpers.MOCK_COCO, data_dir, splits=(None, None))
  source.check()
  return source.detection_split(split, image_size=IMAGE_SIZE,
                                max_boxes=max_boxes)


def expected_targets(example):
  """(boxes in input pixels, labels) of a mocked example's non-crowd objects."""
  height, width = example["image"].shape[:2]
  scale = IMAGE_SIZE / max(height, width)
  objects = [o for o in example["objects"] if not o["is_crowd"]]
  boxes = [[o["bbox"].xmin * width, o["bbox"].ymin * height,
            o["bbox"].xmax * width, o["bbox"].ymax * height] for o in objects]
  return (np.array(boxes, np.float32).reshape(-1, 4) * scale,
          [o["label"] for o in objects])


def flat(batches):
  return {key: np.concatenate([b[key].reshape((-1,) + b[key].shape[2:])
                               for b in batches]) for key in batches[0]}


def test_evaluation_batches_hold_the_letterboxed_boxes(data_dir):
  examples = helpers.mock_coco_examples("validation")
  data = detection_split(data_dir, "validation")
  assert (data.name, len(data), data.num_classes) == ("validation", 5, 80)
  np.testing.assert_array_equal(data.sizes,
                                [e["image"].shape[:2] for e in examples])
  batches = list(data.eval_batches(LAYOUT))
  assert len(batches) == 2
  assert batches[0]["image"].shape == (2, 2, IMAGE_SIZE, IMAGE_SIZE, 3)
  assert batches[0]["boxes"].shape == (2, 2, MAX_BOXES, 4)
  rows = flat(batches)
  np.testing.assert_array_equal(rows["index"], [0, 1, 2, 3, 4, -1, -1, -1])
  np.testing.assert_array_equal(rows["mask"], [1] * 5 + [0] * 3)
  np.testing.assert_array_equal(rows["image_id"][:5],
                                [e["image/id"] for e in examples])
  for row, example in enumerate(examples):
    boxes, labels = expected_targets(example)
    count = len(labels)
    np.testing.assert_allclose(rows["boxes"][row, :count], boxes, atol=1e-4)
    np.testing.assert_array_equal(rows["labels"][row, :count], labels)
    np.testing.assert_array_equal(rows["box_mask"][row],
                                  np.arange(MAX_BOXES) < count)
    height, width = example["image"].shape[:2]
    scale = IMAGE_SIZE / max(height, width)
    # Padded with black below or to the right of the scaled image.
    assert not rows["image"][row, round(height * scale):].any()
    assert not rows["image"][row, :, round(width * scale):].any()
  assert not rows["box_mask"][2].any()  # example 2 has no objects
  assert rows["box_mask"][1].sum() == 1  # example 1's crowd box is left out
  assert not rows["image"][5:].any() and not rows["box_mask"][5:].any()
  # Only the images asked for are decoded.
  first = flat(list(data.eval_batches(LAYOUT, max_examples=2)))
  np.testing.assert_array_equal(first["index"], [0, 1, -1, -1])
  np.testing.assert_array_equal(first["image"][:2], rows["image"][:2])


def test_ground_truth_matches_the_boxes(data_dir):
  examples = helpers.mock_coco_examples("validation")
  data = detection_split(data_dir, "validation")
  truth = data.ground_truth()
  assert [c["id"] for c in truth["categories"]] == list(range(80))
  assert truth["images"] == [
      {"id": e["image/id"], "height": e["image"].shape[0],
       "width": e["image"].shape[1]} for e in examples]
  objects = [(e, o) for e in examples for o in e["objects"]]
  assert len(truth["annotations"]) == len(objects)
  for annotation, (example, obj) in zip(truth["annotations"], objects):
    height, width = example["image"].shape[:2]
    box = obj["bbox"]
    np.testing.assert_allclose(
        annotation["bbox"], [box.xmin * width, box.ymin * height,
                             (box.xmax - box.xmin) * width,
                             (box.ymax - box.ymin) * height], atol=1e-4)
    assert annotation["image_id"] == example["image/id"]
    assert annotation["category_id"] == obj["label"]
    assert annotation["iscrowd"] == obj["is_crowd"]
    assert annotation["area"] == obj["area"]
  assert len({a["id"] for a in truth["annotations"]}) == len(objects)
  # The batches' boxes, as detections, are a perfect score: the mapping
  # back to the images' pixels and category ids matches the ground truth.
  rows = flat(list(data.eval_batches(LAYOUT)))
  real = rows["index"] >= 0
  detections = {"index": rows["index"][real], "boxes": rows["boxes"][real],
                "scores": rows["box_mask"][real],
                "classes": rows["labels"][real]}
  metrics = detect.coco_metrics(truth, detect.coco_results(detections, data),
                                data.image_ids)
  assert metrics["AP"] == pytest.approx(1.0)
  assert set(metrics) == set(detect.METRICS)


def write_as_coco_layout(examples, directory, split):
  """``examples`` (with TFDS's decoded pixels) in COCO's layout; category
  ids 2·label + 1, so that labels are positions, not ids."""
  images, annotations = [], []
  for example in examples:
    image = example["image"]
    height, width = image.shape[:2]
    name = f"{example['image/id']}.png"
    helpers.write_png(os.path.join(directory, split, name), image)
    images.append({"id": int(example["image/id"]), "file_name": name,
                   "width": int(width), "height": int(height)})
    for x0, y0, x1, y1, label, crowd in zip(
        *sources.pixel_boxes(example["objects"]["bbox"], height, width).T,
        example["objects"]["label"], example["objects"]["is_crowd"]):
      annotations.append({"id": len(annotations) + 1,
                          "image_id": int(example["image/id"]),
                          "category_id": 2 * int(label) + 1,
                          "bbox": [float(x0), float(y0), float(x1 - x0),
                                   float(y1 - y0)],
                          "iscrowd": int(crowd)})
  with open(coco.annotation_path(directory, split), "w") as f:
    json.dump({"images": images, "annotations": annotations,
               "categories": [{"id": 2 * k + 1, "name": str(k)}
                              for k in range(80)]}, f)


def test_the_same_batches_as_the_same_set_in_coco_layout(data_dir, tmp_path):
  data = detection_split(data_dir, "validation")
  decoded = list(
      data.builder.as_dataset(split="validation").as_numpy_iterator())
  os.makedirs(tmp_path / "annotations")
  for split in (coco.TRAIN_SPLIT, coco.EVAL_SPLIT):
    write_as_coco_layout(decoded, str(tmp_path), split)
  layout_data = sources.from_name(f"coco:{tmp_path}").detection_split(
      "validation", image_size=IMAGE_SIZE, max_boxes=MAX_BOXES)
  ours, theirs = (flat(list(d.eval_batches(LAYOUT)))
                  for d in (data, layout_data))
  for key in ours:
    np.testing.assert_allclose(ours[key], theirs[key], atol=1e-4, err_msg=key)


def test_training_batches_resume_and_keep_the_first_max_boxes(data_dir):
  examples = {e["image/id"]: e for e in helpers.mock_coco_examples("train")}
  data = detection_split(data_dir, "train", max_boxes=1)
  batches = data.train_batches(0, seed=3, layout=LAYOUT)
  first = [next(batches) for _ in range(3)]
  assert first[0]["image"].shape == (2, 2, IMAGE_SIZE, IMAGE_SIZE, 3)
  resumed = next(data.train_batches(2, seed=3, layout=LAYOUT))
  for key in resumed:
    np.testing.assert_array_equal(resumed[key], first[2][key])
  rows = flat(first)
  assert set(rows["image_id"]) <= set(examples)
  flipped = 0
  for image_id, boxes, mask in zip(rows["image_id"], rows["boxes"],
                                   rows["box_mask"]):
    expected, _ = expected_targets(examples[image_id])
    expected = expected[:1]  # more than max_boxes: the first are kept
    assert mask.sum() == len(expected)
    mirror = np.stack([IMAGE_SIZE - expected[:, 2], expected[:, 1],
                       IMAGE_SIZE - expected[:, 0], expected[:, 3]], axis=1)
    if len(expected) and not np.allclose(boxes[:1], expected, atol=1e-4):
      np.testing.assert_allclose(boxes[:1], mirror, atol=1e-4)
      flipped += 1
  assert 0 < flipped < len(rows["image_id"])
  # The evaluation split is checked whole, as 'coco:DIR' is.
  with pytest.raises(sources.DatasetError, match="raise max_boxes"):
    detection_split(data_dir, "validation", max_boxes=1)


def program_args(workdir, data_dir, pretrained):
  return test_detection.program_args(workdir, "unused", steps=2) + [
      f"--config.dataset={helpers.MOCK_COCO}", f"--config.data_dir={data_dir}",
      f"--config.max_boxes={MAX_BOXES}", f"--pretrained_workdir={pretrained}"]


def test_program_on_mocked_coco_2017(data_dir, pretrained_workdir, tmp_path):
  workdir = str(tmp_path / "det")
  stdout = helpers.run_program(detect, program_args(workdir, data_dir,
                                                    pretrained_workdir))
  assert "COCO box AP on validation (5 images, step 2)" in stdout
  with open(os.path.join(workdir, "detection.json")) as f:
    result = json.load(f)
  for key in detect.METRICS:
    assert result[key] is None or 0.0 <= result[key] <= 1.0
  assert (result["dataset"], result["eval_split"]) == ("coco/2017",
                                                       "validation")


def test_an_unprepared_dataset_says_how_to_prepare_it(pretrained_workdir,
                                                      tmp_path):
  workdir, empty = tmp_path / "det", tmp_path / "empty"
  with pytest.raises(app.UsageError,
                     match=r"config.dataset='coco/2017'.* not prepared under "
                     rf"data_dir='{empty}'.*tfds build coco/2017 "
                     rf"--data_dir={empty}"):
    helpers.run_program(detect, program_args(workdir, empty,
                                             pretrained_workdir))
  assert not workdir.exists() and not empty.exists()
  with pytest.raises(sources.DatasetError, match="'mnist' is not a detection "
                     "set.*it has no image/id, objects"):
    sources.from_name("mnist", str(empty)).detection_split(
        "validation", image_size=8, max_boxes=1)
  with pytest.raises(sources.DatasetError, match="has no split 'val2017'"):
    with helpers.mock_tfds_coco(str(tmp_path / "tfds")) as data_dir:
      sources.from_name(helpers.MOCK_COCO, data_dir,
                        splits=(None, "val2017")).detection_split(
                            "validation", image_size=8, max_boxes=1)
