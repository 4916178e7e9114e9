# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
r"""An offline detection benchmark: Fashion-MNIST items on black canvases.

Writes, in COCO's layout (``OUT/annotations/instances_{train2017,val2017}.json``
and PNG canvases in ``OUT/train2017/``, ``OUT/val2017/``), canvases of
``--size``² pixels holding 1–4 Fashion-MNIST items each, at random scales
and positions, with their tight boxes and the 10 classes as categories:

  python3 -m experiments.make_fashion_detection \
    --idx=../shared/data/fashion_mnist --out=/tmp/fashion_det

* Items are scaled to ``SCALE_RANGE`` × their 28 pixels (bilinear) and
  composited by the pixel-wise maximum, so an overlapped item stays
  visible; a new item may overlap each earlier one by at most
  ``MAX_IOU`` (IoU of their boxes), else its position is drawn again.
* Boxes are tight: the bounding rectangle of the scaled item's non-zero
  pixels.
* Training canvases use items of the IDX directory's training split only;
  validation canvases use ``t10k-*`` when the directory has them, else
  the held-out sixth of ``train-*`` that the probes score on
  (``finola_jax.data.idx.load``): no item is in both.
* Deterministic given ``--seed``: the two splits draw from independent
  streams of it.

Canvas size: the default 64×64 at the pre-training's stride 4 gives the
detector a 16×16 feature map; the smallest item (``SCALE_RANGE[0]`` × 28 ≈
14 pixels) still spans about 3.5 feature positions, so every item has its
own centre cell, and at scale 1 items look as in pre-training (28 pixels
on 32×32). A 96×96 canvas would only add empty background for the same
items, and cost 2.25× the compute per step on two cores.
"""

from __future__ import annotations

import json
import os

import numpy as np
import PIL.Image
from absl import app
from absl import flags

from finola_jax.data import coco
from finola_jax.data import idx

CLASS_NAMES = ("t-shirt/top", "trouser", "pullover", "dress", "coat",
               "sandal", "shirt", "sneaker", "bag", "ankle boot")
MIN_ITEMS, MAX_ITEMS = 1, 4
SCALE_RANGE = (0.5, 1.15)
MAX_IOU = 0.3
# Positions drawn for one item before it is left out of its canvas.
_PLACEMENT_TRIES = 20


def define_flags(flag_values: flags.FlagValues = flags.FLAGS,
                 sys_argv=None) -> None:
  del sys_argv  # No config file.
  flags.DEFINE_string("idx", None, "IDX directory (train-* and optionally "
                      "t10k-* of Fashion-MNIST).", flag_values=flag_values)
  flags.DEFINE_string("out", None, "Output directory (COCO layout).",
                      flag_values=flag_values)
  flags.DEFINE_integer("seed", 0, "Seed of every random choice.",
                       flag_values=flag_values)
  flags.DEFINE_integer("num_train", 20000, "Training canvases.",
                       flag_values=flag_values)
  flags.DEFINE_integer("num_val", 2000, "Validation canvases.",
                       flag_values=flag_values)
  flags.DEFINE_integer("size", 64, "Canvas side in pixels.",
                       flag_values=flag_values)


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
  """IoU of two ``(x0, y0, x1, y1)`` boxes."""
  width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
  height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
  inter = width * height
  union = ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) -
           inter)
  return inter / union if union > 0 else 0.0


def scaled_item(item: np.ndarray, side: int) -> np.ndarray:
  """uint8 ``[28, 28]`` → uint8 ``[side, side]`` (bilinear)."""
  return np.asarray(PIL.Image.fromarray(item).resize(
      (side, side), PIL.Image.Resampling.BILINEAR))


def tight_box(pixels: np.ndarray) -> tuple[int, int, int, int] | None:
  """``(x0, y0, x1, y1)`` (x1, y1 exclusive) of the non-zero pixels; None if none."""
  rows = np.flatnonzero(pixels.any(axis=1))
  cols = np.flatnonzero(pixels.any(axis=0))
  if not len(rows):
    return None
  return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def make_canvas(items: np.ndarray, labels: np.ndarray, size: int,
                rng: np.random.Generator):
  """One canvas: ``(uint8 [size, size], boxes, labels, item indices)``.

  Items come from ``items`` ``[N, 28, 28]`` only. Boxes are
  ``(x0, y0, x1, y1)`` in pixels; each pair of boxes has IoU ≤ `MAX_IOU`.
  """
  canvas = np.zeros((size, size), np.uint8)
  boxes, classes, sources = [], [], []
  for _ in range(rng.integers(MIN_ITEMS, MAX_ITEMS + 1)):
    index = int(rng.integers(len(items)))
    side = min(size, int(round(rng.uniform(*SCALE_RANGE) * items.shape[1])))
    pixels = scaled_item(items[index], side)
    box = tight_box(pixels)
    if box is None:  # A blank item has nothing to detect.
      continue
    for _ in range(_PLACEMENT_TRIES):
      top, left = (int(v) for v in rng.integers(0, size - side + 1, 2))
      placed = np.array([left + box[0], top + box[1], left + box[2],
                         top + box[3]], np.float64)
      if all(box_iou(placed, other) <= MAX_IOU for other in boxes):
        break
    else:
      continue
    region = canvas[top:top + side, left:left + side]
    np.maximum(region, pixels, out=region)
    boxes.append(placed)
    classes.append(int(labels[index]))
    sources.append(index)
  return canvas, boxes, classes, sources


def write_split(out: str, split: str, items: np.ndarray, labels: np.ndarray,
                count: int, size: int, rng: np.random.Generator,
                source_split: str) -> None:
  """Writes ``count`` canvases and ``annotations/instances_{split}.json``.

  Each annotation records the item it shows (``source``: the IDX split it
  came from and its position there).
  """
  image_dir = os.path.join(out, split)
  os.makedirs(image_dir, exist_ok=True)
  images, annotations = [], []
  for image_id in range(1, count + 1):
    canvas, boxes, classes, sources = make_canvas(items, labels, size, rng)
    file_name = f"{image_id:012d}.png"
    PIL.Image.fromarray(canvas).save(os.path.join(image_dir, file_name))
    images.append({"id": image_id, "file_name": file_name, "width": size,
                   "height": size})
    for box, label, source in zip(boxes, classes, sources):
      x0, y0, x1, y1 = (float(v) for v in box)
      annotations.append({
          "id": len(annotations) + 1, "image_id": image_id,
          "category_id": label + 1, "bbox": [x0, y0, x1 - x0, y1 - y0],
          "area": (x1 - x0) * (y1 - y0), "iscrowd": 0,
          "source": {"split": source_split, "index": source}})
  data = {"info": {"description": "Fashion-MNIST detection canvases"},
          "images": images, "annotations": annotations,
          "categories": [{"id": i + 1, "name": name}
                         for i, name in enumerate(CLASS_NAMES)]}
  path = coco.annotation_path(out, split)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    json.dump(data, f)


def make_dataset(idx_dir: str, out: str, *, seed: int = 0,
                 num_train: int = 20000, num_val: int = 2000,
                 size: int = 64) -> str:
  """Writes both splits (see the module doc); returns the eval split's origin."""
  if num_train < 1 or num_val < 1:
    raise ValueError("--num_train and --num_val must be >= 1.")
  data = idx.load(idx_dir)
  if size < max(data.train_images.shape[1:]):
    raise ValueError(f"--size={size} must be at least an item's side "
                     f"({max(data.train_images.shape[1:])}).")
  if data.num_classes > len(CLASS_NAMES):
    raise ValueError(f"{idx_dir}: labels beyond the {len(CLASS_NAMES)} "
                     "Fashion-MNIST classes.")
  train_rng, val_rng = (np.random.default_rng([seed, part]) for part in (0, 1))
  write_split(out, coco.TRAIN_SPLIT, data.train_images, data.train_labels,
              num_train, size, train_rng, "train")
  write_split(out, coco.EVAL_SPLIT, data.eval_images, data.eval_labels,
              num_val, size, val_rng, data.eval_split)
  return data.eval_split


def main(argv, flag_values: flags.FlagValues = flags.FLAGS) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not flag_values.idx or not flag_values.out:
    raise app.UsageError("--idx and --out are required.")
  try:
    eval_split = make_dataset(
        flag_values.idx, flag_values.out, seed=flag_values.seed,
        num_train=flag_values.num_train, num_val=flag_values.num_val,
        size=flag_values.size)
  except ValueError as e:  # idx.IdxError is one.
    raise app.UsageError(str(e)) from None
  print(f"Wrote {flag_values.num_train} training and {flag_values.num_val} "
        f"validation canvases (items of the {eval_split!r} split) to "
        f"{flag_values.out}", flush=True)


if __name__ == "__main__":
  define_flags()
  app.run(main)
