# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""COCO-format detection sets in COCO's own layout: reader, checks, batches.

A directory ``DIR`` holds ``DIR/annotations/instances_{split}.json`` and the
images of each split in ``DIR/{split}/`` (split names such as ``train2017``
and ``val2017``). The JSON file has COCO's keys: ``images`` (``id``,
``file_name``, ``width``, ``height``), ``annotations`` (``id``,
``image_id``, ``category_id``, ``bbox`` = ``[x, y, width, height]`` in
pixels) and ``categories`` (``id``, ``name``). Crowd annotations
(``iscrowd: 1``) are not training targets (COCOeval ignores them too); an
image without boxes is valid.

`load_split` reads and checks one split; `DetectionSplit` turns it into
batches for ``jax.pmap``. Programs reach them through the dataset name
``"coco:DIR"`` (`finola_jax.data.sources.CocoSource`), which turns
`CocoFormatError` into the pipelines' `DatasetError`. `DetectionData` is
what a detector needs of a split whatever its kind (`DetectionSplit` here,
TFDS's ``coco/2017`` in `finola_jax.data.sources`); every kind builds its
examples with `detection_example`:

* images float32 ``[local_devices, per_device, S, S, 3]`` in [0, 1]: each
  image scaled (bilinear) so that its longer side is S and padded with
  black at the bottom and right (``letterbox``), so boxes keep their shape;
* ``boxes`` float32 ``[..., max_boxes, 4]`` as ``(x0, y0, x1, y1)`` in
  pixels of the S×S input, ``labels`` int32 ``[..., max_boxes]`` (the
  category's position in ``categories`` sorted by id: COCO's 80 categories
  become 0..79, as TFDS labels them), ``box_mask``
  float32 ``[..., max_boxes]`` (1 on real boxes, 0 on padding), and
  ``image_id`` int32 ``[...]`` (COCO's id).

Training batches are a pure function of ``(seed, step)``, the same global
batch for every process/device layout, with a random horizontal flip;
evaluation is one deterministic pass with ``index``/``mask`` padding, as in
``finola_jax.data.input_pipeline``. Only numpy, PIL and the standard
library: no TensorFlow. Images are decoded when their batch is built, so a
split of any size streams.
"""

from __future__ import annotations

import abc
import dataclasses
import json
import os
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
from etils import epy

# Imported on first use: `sources` imports this module, and a TF-free
# accelerator image that uses `sources`' photographs may have no PIL.
with epy.lazy_imports():
  import PIL.Image  # pylint: disable=g-import-not-at-top

TRAIN_SPLIT = "train2017"
EVAL_SPLIT = "val2017"
# Boxes may reach this far past the image's edge (COCO's own annotations
# overshoot by rounding); they are clipped to it.
EDGE_TOLERANCE = 1.0

_IMAGE_KEYS = ("id", "file_name", "width", "height")
_ANNOTATION_KEYS = ("id", "image_id", "category_id", "bbox")
_CATEGORY_KEYS = ("id", "name")


class CocoFormatError(ValueError):
  """A COCO annotation file is missing, malformed or inconsistent."""


def annotation_path(directory: str, split: str) -> str:
  return os.path.join(directory, "annotations", f"instances_{split}.json")


@dataclasses.dataclass(frozen=True)
class CocoSplit:
  """One checked split, in the order of its ``images`` list.

  Attributes:
    name: the split's name (``val2017``).
    annotation_file: the JSON file it was read from (COCOeval's ground truth).
    image_ids: int64 ``[N]`` COCO ids.
    paths: ``N`` image files.
    sizes: int32 ``[N, 2]`` (height, width) from the JSON file.
    boxes: ``N`` float32 ``[k_i, 4]`` ``(x0, y0, x1, y1)`` in the image's pixels.
    labels: ``N`` int32 ``[k_i]``: positions in ``category_ids``.
    category_ids: sorted COCO category ids; ``category_names`` theirs.
  """
  name: str
  annotation_file: str
  image_ids: np.ndarray
  paths: tuple[str, ...]
  sizes: np.ndarray
  boxes: tuple[np.ndarray, ...]
  labels: tuple[np.ndarray, ...]
  category_ids: tuple[int, ...]
  category_names: tuple[str, ...]

  @property
  def num_classes(self) -> int:
    return len(self.category_ids)

  @property
  def max_boxes_per_image(self) -> int:
    return max((len(b) for b in self.boxes), default=0)


def _entries(data: Mapping[str, Any], key: str, required: Sequence[str],
             path: str) -> list:
  if key not in data or not isinstance(data[key], list):
    raise CocoFormatError(f"{path}: no {key!r} list at the top level.")
  for position, entry in enumerate(data[key]):
    missing = [k for k in required if not isinstance(entry, dict) or k not in entry]
    if missing:
      raise CocoFormatError(f"{path}: {key}[{position}] ({entry!r:.120}) has no "
                            f"{', '.join(repr(k) for k in missing)}.")
  return data[key]


def load_split(directory: str, split: str) -> CocoSplit:
  """Reads and checks ``DIR/annotations/instances_{split}.json``.

  Raises:
    CocoFormatError: naming the file and the entry: a missing file or key, a
      duplicate id, an annotation of an unknown image or category, a box
      with non-positive size or outside its image, or an image whose file
      is not in ``DIR/{split}/``.
  """
  path = annotation_path(directory, split)
  if not os.path.isfile(path):
    raise CocoFormatError(f"{path} does not exist (expected COCO's layout: "
                          f"DIR/annotations/instances_{split}.json).")
  try:
    with open(path) as f:
      data = json.load(f)
  except json.JSONDecodeError as e:
    raise CocoFormatError(f"{path}: not valid JSON ({e}).") from e
  if not isinstance(data, dict):
    raise CocoFormatError(f"{path}: expected a JSON object at the top level.")
  images = _entries(data, "images", _IMAGE_KEYS, path)
  annotations = _entries(data, "annotations", _ANNOTATION_KEYS, path)
  categories = _entries(data, "categories", _CATEGORY_KEYS, path)

  category_ids = sorted(int(c["id"]) for c in categories)
  if len(set(category_ids)) != len(category_ids):
    raise CocoFormatError(f"{path}: duplicate category ids.")
  names = {int(c["id"]): str(c["name"]) for c in categories}
  label_of = {cid: position for position, cid in enumerate(category_ids)}

  image_dir = os.path.join(directory, split)
  present = set(os.listdir(image_dir)) if os.path.isdir(image_dir) else set()
  row_of = {}
  for position, image in enumerate(images):
    image_id = int(image["id"])
    if image_id in row_of:
      raise CocoFormatError(f"{path}: images[{position}] repeats id {image_id}.")
    if image["file_name"] not in present:
      raise CocoFormatError(
          f"{path}: images[{position}] (id {image_id}) names "
          f"{image['file_name']!r}, which is not in {image_dir}.")
    if int(image["width"]) < 1 or int(image["height"]) < 1:
      raise CocoFormatError(f"{path}: images[{position}] (id {image_id}) has "
                            f"size {image['width']}×{image['height']}.")
    row_of[image_id] = position

  boxes = [[] for _ in images]
  labels = [[] for _ in images]
  for position, annotation in enumerate(annotations):
    where = f"{path}: annotations[{position}] (id {annotation['id']})"
    image_id = int(annotation["image_id"])
    if image_id not in row_of:
      raise CocoFormatError(f"{where} refers to image id {image_id}, which is "
                            "not in 'images'.")
    category_id = int(annotation["category_id"])
    if category_id not in label_of:
      raise CocoFormatError(f"{where} has category_id {category_id}, which is "
                            f"not in 'categories' ({category_ids}).")
    bbox = annotation["bbox"]
    if not isinstance(bbox, list) or len(bbox) != 4:
      raise CocoFormatError(f"{where}: bbox must be [x, y, width, height], "
                            f"got {bbox!r}.")
    x, y, w, h = (float(v) for v in bbox)
    image = images[row_of[image_id]]
    width, height = float(image["width"]), float(image["height"])
    if not (w > 0 and h > 0):
      raise CocoFormatError(f"{where}: bbox {bbox} has a non-positive size.")
    if (x < -EDGE_TOLERANCE or y < -EDGE_TOLERANCE or
        x + w > width + EDGE_TOLERANCE or y + h > height + EDGE_TOLERANCE):
      raise CocoFormatError(
          f"{where}: bbox {bbox} lies outside its image (id {image_id}, "
          f"{width:g}×{height:g}).")
    if annotation.get("iscrowd", 0):
      continue
    row = row_of[image_id]
    boxes[row].append([max(x, 0.0), max(y, 0.0), min(x + w, width),
                       min(y + h, height)])
    labels[row].append(label_of[category_id])

  return CocoSplit(
      name=split,
      annotation_file=path,
      image_ids=np.array([int(i["id"]) for i in images], np.int64),
      paths=tuple(os.path.join(image_dir, i["file_name"]) for i in images),
      sizes=np.array([[int(i["height"]), int(i["width"])] for i in images],
                     np.int32).reshape(-1, 2),
      boxes=tuple(np.array(b, np.float32).reshape(-1, 4) for b in boxes),
      labels=tuple(np.array(l, np.int32) for l in labels),
      category_ids=tuple(category_ids),
      category_names=tuple(names[c] for c in category_ids))


def letterbox_scale(height: int, width: int, image_size: int) -> float:
  """The factor that brings the longer side of an image to ``image_size``."""
  return image_size / max(height, width)


def letterbox(image: np.ndarray, image_size: int) -> np.ndarray:
  """uint8 ``[H, W, 3]`` → float32 ``[S, S, 3]``: scaled, padded bottom/right."""
  height, width = image.shape[:2]
  scale = letterbox_scale(height, width, image_size)
  new_h = min(image_size, max(1, round(height * scale)))
  new_w = min(image_size, max(1, round(width * scale)))
  if (new_h, new_w) != (height, width):
    image = np.asarray(PIL.Image.fromarray(image).resize(
        (new_w, new_h), PIL.Image.Resampling.BILINEAR))
  canvas = np.zeros((image_size, image_size, 3), np.float32)
  canvas[:new_h, :new_w] = image.astype(np.float32) / 255.0
  return canvas


def read_rgb(path: str) -> np.ndarray:
  """uint8 ``[H, W, 3]`` (greyscale and palette images converted)."""
  with PIL.Image.open(path) as image:
    return np.asarray(image.convert("RGB"))


def read_ground_truth(annotation_file: str) -> dict[str, Any]:
  """A COCO annotation file as COCOeval's ground truth (all of it: crowd
  boxes too, which COCOeval ignores). Boxes without ``area`` get their box's
  area and those without ``iscrowd`` 0: COCOeval reads both."""
  with open(annotation_file) as f:
    dataset = json.load(f)
  for annotation in dataset["annotations"]:
    annotation.setdefault("area", annotation["bbox"][2] * annotation["bbox"][3])
    annotation.setdefault("iscrowd", 0)
  return dataset


def check_budget(image_size: int, max_boxes: int) -> None:
  """Raises ValueError unless both are >= 1."""
  if image_size < 1 or max_boxes < 1:
    raise ValueError(f"image_size ({image_size}) and max_boxes ({max_boxes}) "
                     "must be >= 1.")


def detection_example(image: np.ndarray, boxes: np.ndarray, labels: np.ndarray,
                      image_id: int, *, image_size: int, max_boxes: int,
                      flip: bool = False) -> dict[str, np.ndarray]:
  """One image as the model sees it, with its padded boxes.

  Args:
    image: uint8 ``[H, W, 3]``.
    boxes: float ``[k, 4]`` ``(x0, y0, x1, y1)`` in the image's pixels,
      k <= max_boxes.
    labels: int ``[k]``.
    image_id: COCO's id.
    image_size: S (`letterbox`).
    max_boxes: the padded number of boxes.
    flip: mirror the image and its boxes left-right.

  Returns:
    ``image`` float32 ``[S, S, 3]``, ``boxes`` float32 ``[max_boxes, 4]`` in
    input pixels, ``labels`` int32 ``[max_boxes]``, ``box_mask`` float32
    ``[max_boxes]``, ``image_id`` int32 ``[]``.
  """
  height, width = image.shape[:2]
  scale = letterbox_scale(height, width, image_size)
  image = letterbox(image, image_size)
  boxes = np.asarray(boxes, np.float32).reshape(-1, 4) * scale
  if flip:
    image = image[:, ::-1]
    boxes = np.stack([image_size - boxes[:, 2], boxes[:, 1],
                      image_size - boxes[:, 0], boxes[:, 3]], axis=1)
  count = len(boxes)
  padded = np.zeros((max_boxes, 4), np.float32)
  padded[:count] = boxes
  padded_labels = np.zeros(max_boxes, np.int32)
  padded_labels[:count] = labels
  return {"image": image,
          "boxes": padded,
          "labels": padded_labels,
          "box_mask": (np.arange(max_boxes) < count).astype(np.float32),
          "image_id": np.int32(image_id)}


def to_devices(examples: Sequence[Mapping[str, np.ndarray]],
               layout) -> dict[str, np.ndarray]:
  """Examples stacked to ``[local_devices, per_device, ...]``."""
  return {key: np.stack([e[key] for e in examples]).reshape(
      (layout.local_device_count, layout.per_device_batch_size) +
      np.shape(examples[0][key])) for key in examples[0]}


class DetectionData(abc.ABC):
  """A split with boxes, as a detector trains on it and COCOeval scores it.

  Its rows are the split's images in a fixed order; `image_ids` and `sizes`
  describe them and `eval_batches` serves them (``index`` is the row).
  Subclasses set ``image_size`` (S) and ``max_boxes``.
  """

  image_size: int
  max_boxes: int

  @property
  @abc.abstractmethod
  def name(self) -> str:
    """The split's name (``val2017``, ``validation``)."""

  @property
  @abc.abstractmethod
  def category_ids(self) -> tuple[int, ...]:
    """The category id of each label (COCOeval's ``category_id``)."""

  @property
  @abc.abstractmethod
  def category_names(self) -> tuple[str, ...]:
    """The name of each label."""

  @property
  @abc.abstractmethod
  def image_ids(self) -> np.ndarray:
    """int64 ``[N]``: COCO's id of each row."""

  @property
  @abc.abstractmethod
  def sizes(self) -> np.ndarray:
    """int32 ``[N, 2]``: (height, width) of each row's image."""

  @abc.abstractmethod
  def ground_truth(self) -> dict[str, Any]:
    """COCOeval's ground truth: a COCO-format dict (``images``,
    ``annotations`` with ``area`` and ``iscrowd``, ``categories``) in the
    images' own pixels."""

  @abc.abstractmethod
  def train_batches(self, start_step: int, *, seed: int,
                    layout) -> Iterator[dict[str, np.ndarray]]:
    """Endless training batches for steps start_step, start_step + 1, ...:
    `detection_example`s, randomly flipped, stacked by `to_devices`."""

  @abc.abstractmethod
  def row_examples(self, rows: np.ndarray) -> Iterator[dict[str, np.ndarray]]:
    """The `detection_example` (unflipped) of each of ``rows`` (increasing),
    in order."""

  @property
  def num_classes(self) -> int:
    return len(self.category_ids)

  def __len__(self) -> int:
    return len(self.image_ids)

  def blank_example(self) -> dict[str, np.ndarray]:
    """A padding example: black, no boxes, image id -1."""
    return {"image": np.zeros((self.image_size, self.image_size, 3),
                              np.float32),
            "boxes": np.zeros((self.max_boxes, 4), np.float32),
            "labels": np.zeros(self.max_boxes, np.int32),
            "box_mask": np.zeros(self.max_boxes, np.float32),
            "image_id": np.int32(-1)}

  def eval_batches(self, layout, max_examples: int | None = None
                   ) -> Iterator[dict[str, np.ndarray]]:
    """One pass over the split (its first ``max_examples``), no randomness.

    Process p takes rows p, p + P, ...; every process yields the same
    number of batches. Each batch also holds ``index`` int32 (the row, -1
    for padding) and ``mask`` float32 (0 for padding, whose image is black
    and boxes all masked).
    """
    count = len(self) if max_examples is None else min(max_examples, len(self))
    share = np.arange(count)[layout.process_index::layout.process_count]
    max_share = -(-count // layout.process_count)
    num_batches = -(-max_share // layout.local_batch_size)
    examples = self.row_examples(share)
    blank = dict(self.blank_example(), index=np.int32(-1), mask=np.float32(0))
    for b in range(num_batches):
      batch = []
      for k in range(b * layout.local_batch_size,
                     (b + 1) * layout.local_batch_size):
        if k < len(share):
          batch.append(dict(next(examples), index=np.int32(share[k]),
                            mask=np.float32(1)))
        else:
          batch.append(blank)
      yield to_devices(batch, layout)


@dataclasses.dataclass(frozen=True)
class DetectionSplit(DetectionData):
  """A split in COCO's layout at one image size and box budget.

  Attributes:
    split: the checked annotations.
    image_size: S.
    max_boxes: the padded number of boxes per image; no image may have more
      (`create` checks it).
  """
  split: CocoSplit
  image_size: int
  max_boxes: int

  @classmethod
  def create(cls, split: CocoSplit, image_size: int,
             max_boxes: int) -> "DetectionSplit":
    check_budget(image_size, max_boxes)
    most = split.max_boxes_per_image
    if most > max_boxes:
      raise ValueError(f"{split.annotation_file}: an image has {most} boxes, "
                       f"more than max_boxes={max_boxes}; raise max_boxes.")
    return cls(split, image_size, max_boxes)

  @property
  def name(self) -> str:
    return self.split.name

  @property
  def category_ids(self) -> tuple[int, ...]:
    return self.split.category_ids

  @property
  def category_names(self) -> tuple[str, ...]:
    return self.split.category_names

  @property
  def image_ids(self) -> np.ndarray:
    return self.split.image_ids

  @property
  def sizes(self) -> np.ndarray:
    return self.split.sizes

  def ground_truth(self) -> dict[str, Any]:
    return read_ground_truth(self.split.annotation_file)

  def example(self, row: int, flip: bool = False) -> dict[str, np.ndarray]:
    """Image ``row`` as the model sees it (`detection_example`)."""
    return detection_example(
        read_rgb(self.split.paths[row]), self.split.boxes[row],
        self.split.labels[row], self.split.image_ids[row],
        image_size=self.image_size, max_boxes=self.max_boxes, flip=flip)

  def row_examples(self, rows):
    return (self.example(int(row)) for row in rows)

  def train_batch(self, step: int, *, seed: int, layout) -> dict[str, np.ndarray]:
    """The batch of training step ``step``: a function of (seed, step) alone.

    Example k of the global batch is image ``rows[k]`` of a draw with
    replacement seeded by ``(seed, step)``, flipped when ``flips[k]``;
    this process builds its rows of it.

    Args:
      step: the training step.
      seed: the run's seed.
      layout: ``input_pipeline.BatchLayout`` (process_index, process_count,
        local_device_count, per_device_batch_size).
    """
    global_batch = layout.local_batch_size * layout.process_count
    rng = np.random.default_rng([seed, step])
    rows = rng.integers(0, len(self), global_batch)
    flips = rng.random(global_batch) < 0.5
    first = layout.process_index * layout.local_batch_size
    mine = range(first, first + layout.local_batch_size)
    return to_devices([self.example(int(rows[k]), bool(flips[k]))
                       for k in mine], layout)

  def train_batches(self, start_step, *, seed, layout):
    step = start_step
    while True:
      yield self.train_batch(step, seed=seed, layout=layout)
      step += 1
