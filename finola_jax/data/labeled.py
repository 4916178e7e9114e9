# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Labeled images for probing frozen features (e.g. a linear classifier).

Dataset names understood by `load_labeled_split`:

* ``"digits"`` (`DIGITS`): scikit-learn's bundled 8x8 handwritten digits
  (1797 images, 10 classes), upscaled and made RGB. Needs no network.
* ``"folder:/some/dir"`` or an existing directory: one subfolder per class
  (classes in name order), images anywhere under each class subfolder.
* ``"idx:/some/dir"``: MNIST-family IDX files with labels (`idx.load`: train
  on ``train-*``, score on ``t10k-*`` or a held-out sixth of ``train-*``);
  only through `load_labeled_arrays`.
* anything else: a labeled TFDS dataset ("image" and "label" features), e.g.
  "cifar10" or "imagenet2012".

Images are centre-cropped to a square and resized (IDX images: padded or
resized, `idx.default_fit`), never augmented, and come in a fixed order, so
features extracted twice agree.
"""

import dataclasses
import functools
import os
from typing import Callable, Iterator

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from finola_jax.data import idx
from finola_jax.data import preprocessing
from finola_jax.data import sources

DIGITS = "digits"
SPLITS = ("train", "validation")
# `load_labeled_split`'s sources split by holding out; their scored split is
# called this in `LabeledArrays.eval_split`.
VALIDATION = "validation"

# In-memory sources hold out, per class, the examples at positions 4, 9, 14, ...
# of the class's sorted list: 20 %.
_HOLDOUT_EVERY = 5


@dataclasses.dataclass(frozen=True)
class LabeledSplit:
  """One split of a labeled dataset.

  Attributes:
    num_classes: labels are in [0, num_classes).
    num_examples: examples in one pass.
    dataset_fn: builds a tf.data.Dataset with one pass over the examples,
      {"image": float32 [S, S, 3] in [0, 1], "label": int32 []}, in a fixed
      order. Use `batches` unless you need tf.data.
  """

  num_classes: int
  num_examples: int
  dataset_fn: Callable[[], tf.data.Dataset]

  def batches(self, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """One pass: {"image": float32 [b, S, S, 3], "label": int32 [b]}.

    b is `batch_size` except in a smaller last batch (no padding).
    """
    if batch_size < 1:
      raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    return self.dataset_fn().batch(batch_size).prefetch(
        tf.data.AUTOTUNE).as_numpy_iterator()


def _in_memory_split(images: np.ndarray, labels: np.ndarray, num_classes: int,
                     split: str, max_examples: int | None) -> LabeledSplit:
  """Holds out every `_HOLDOUT_EVERY`-th example of each class for validation.

  Args:
    images: float32 [N, S, S, 3], in any order; each split keeps it.
    labels: int [N].
    num_classes: number of classes.
    split: "train" or "validation".
    max_examples: keep only the first this many examples of the split.
  """
  held_out = np.zeros(len(labels), bool)
  for label in range(num_classes):
    members = np.flatnonzero(labels == label)
    held_out[members[sources.holdout_positions(len(members),
                                                      _HOLDOUT_EVERY)]] = True
  chosen = np.flatnonzero(held_out if split == "validation" else ~held_out)
  chosen = chosen[:max_examples]
  examples = {"image": images[chosen].astype(np.float32),
              "label": labels[chosen].astype(np.int32)}
  return LabeledSplit(
      num_classes=num_classes, num_examples=len(chosen),
      dataset_fn=lambda: tf.data.Dataset.from_tensor_slices(examples))


def _digits(image_size: int) -> tuple[np.ndarray, np.ndarray, int]:
  """scikit-learn's digits: float32 [1797, S, S, 3] in [0, 1], labels, 10."""
  # Imported here: only this source needs scikit-learn.
  from sklearn import datasets  # pylint: disable=g-import-not-at-top

  digits = datasets.load_digits()
  images = digits.images[..., None].astype(np.float32) / 16.0  # Values 0..16.
  images = tf.image.resize(images, [image_size, image_size],
                           method="bilinear", antialias=True).numpy()
  return (np.repeat(images, 3, axis=-1), digits.target,
          len(digits.target_names))


def _class_folders(directory: str) -> tuple[list[str], np.ndarray, int]:
  """(image paths, their labels, number of classes) of a class-per-folder dir."""
  subfolders = sorted(name for name in os.listdir(directory)
                      if os.path.isdir(os.path.join(directory, name)))
  if len(subfolders) < 2:
    raise ValueError(
        f"{directory!r} has {len(subfolders)} class subfolder(s); a labeled "
        "folder needs at least two (one per class).")
  paths, labels = [], []
  for label, name in enumerate(subfolders):
    class_paths = sources.list_image_files(
        os.path.join(directory, name), recursive=True)
    paths += class_paths
    labels += [label] * len(class_paths)
  return paths, np.array(labels), len(subfolders)


def _folder_split(directory: str, split: str, image_size: int,
                  max_examples: int | None) -> LabeledSplit:
  """A class-per-subfolder directory, decoded into memory."""
  paths, labels, num_classes = _class_folders(directory)
  images = np.stack([
      preprocessing.center_crop_resize(
          sources.decode_image_file(path), image_size).numpy()
      for path in paths])
  return _in_memory_split(images, labels, num_classes, split, max_examples)


def _tfds_split(name: str, split: str, image_size: int, data_dir: str | None,
                max_examples: int | None) -> LabeledSplit:
  """A labeled TFDS split, decoded lazily on each pass."""
  builder = sources.tfds_builder(name, data_dir)
  features = builder.info.features
  if ("image" not in features or "label" not in features
      or not isinstance(features["label"], tfds.features.ClassLabel)):
    raise ValueError(
        f"TFDS dataset {name!r} is not an image classification dataset: it "
        "needs an 'image' feature and a class 'label' feature.")
  if split == "validation":
    split = sources.validation_split_name(builder)
  split = sources.limit_split(builder, split, max_examples)

  def dataset_fn():
    examples = sources.read_tfds_split(builder, split,
                                              shuffle_files=False)
    return examples.map(
        lambda ex: {
            "image": preprocessing.center_crop_resize(
                sources.decode_image(ex["image"]), image_size),
            "label": tf.cast(ex["label"], tf.int32)},
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

  return LabeledSplit(num_classes=features["label"].num_classes,
                      num_examples=builder.info.splits[split].num_examples,
                      dataset_fn=dataset_fn)


def load_labeled_split(dataset: str, split: str, *, image_size: int,
                       data_dir: str | None = None,
                       max_examples: int | None = None) -> LabeledSplit:
  """A split of a labeled dataset, for probing.

  Args:
    dataset: `DIGITS`, "folder:DIR" / an existing DIR (one subfolder per
      class), or a labeled TFDS dataset name.
    split: "train" or "validation". Validation is, for digits and folders,
      every 5th example of each class (20 %, at least one per class with two
      or more examples); for TFDS the "validation" split, else "test".
    image_size: S, the side of the square output images.
    data_dir: TFDS data directory.
    max_examples: keep only the first this many examples of the split.

  Returns:
    A `LabeledSplit`; `.batches(batch_size)` iterates over it once.
  """
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")
  preprocessing.check_image_size(image_size)
  sources.check_max_examples(max_examples)
  if dataset == DIGITS:
    return _in_memory_split(*_digits(image_size), split, max_examples)
  if sources.idx_path(dataset) is not None:
    raise ValueError(f"{dataset!r}: IDX datasets are read whole into memory; "
                     "use load_labeled_arrays.")
  if dataset == sources.EMBEDDED:
    raise ValueError(
        f"{sources.EMBEDDED!r} has no labels; use {DIGITS!r}, a "
        "class-per-subfolder directory or a labeled TFDS dataset.")
  directory = sources.folder_path(dataset)
  if directory is not None:
    return _folder_split(directory, split, image_size, max_examples)
  return _tfds_split(dataset, split, image_size, data_dir, max_examples)


@dataclasses.dataclass(frozen=True)
class LabeledArrays:
  """Both splits of a labeled dataset, in memory.

  Attributes:
    train_inputs: stored training examples ``[N, ...]``: uint8 ``[N, H, W]``
      for IDX sources, float32 images ``[N, S, S, 3]`` otherwise.
    train_labels: int32 ``[N]``.
    eval_inputs: stored evaluation examples ``[M, ...]``.
    eval_labels: int32 ``[M]``.
    num_classes: labels are in [0, num_classes).
    eval_split: what is scored: ``"t10k"`` or ``"holdout"`` (IDX, see
      `idx.load`), else `VALIDATION`.
    prepare: stored examples ``[b, ...]`` → float32 images ``[b, S, S, 3]``
      in [0, 1].
  """
  train_inputs: np.ndarray
  train_labels: np.ndarray
  eval_inputs: np.ndarray
  eval_labels: np.ndarray
  num_classes: int
  eval_split: str
  prepare: Callable[[np.ndarray], np.ndarray]


def _split_arrays(split: LabeledSplit) -> tuple[np.ndarray, np.ndarray]:
  batches = list(split.batches(256))
  return (np.concatenate([b["image"] for b in batches]),
          np.concatenate([b["label"] for b in batches]))


def _already_images(images: np.ndarray) -> np.ndarray:
  """`prepare` of sources stored as float32 images ``[b, S, S, 3]``."""
  return images


def load_labeled_arrays(dataset: str, *, image_size: int,
                        data_dir: str | None = None,
                        max_examples: int | None = None) -> LabeledArrays:
  """Both splits of `dataset` as arrays (see `load_labeled_split`).

  IDX images stay uint8 greyscale (Fashion-MNIST's 60,000 take 47 MB) and
  `LabeledArrays.prepare` fits a batch of them to float RGB; the other
  sources are decoded to float32 images here, so keep them to what fits in
  memory (CIFAR-10's 50,000 32×32 images: 600 MB).

  Args:
    dataset: as for `load_labeled_split`, or ``"idx:DIR"``.
    image_size: S.
    data_dir: TFDS data directory.
    max_examples: keep only the first this many examples of each split.

  Raises:
    ValueError: an unknown dataset; for IDX, `idx.IdxError` (a missing or
      malformed file).
  """
  preprocessing.check_image_size(image_size)
  sources.check_max_examples(max_examples)
  directory = sources.idx_path(dataset)
  if directory is None:
    train, validation = (load_labeled_split(
        dataset, name, image_size=image_size, data_dir=data_dir,
        max_examples=max_examples) for name in SPLITS)
    return LabeledArrays(*_split_arrays(train), *_split_arrays(validation),
                         train.num_classes, VALIDATION, _already_images)
  data = sources.load_idx(directory, with_labels=True)
  prepare = functools.partial(idx.to_model_images, image_size=image_size,
                              fit=idx.default_fit(data.train_images, image_size))
  return LabeledArrays(
      data.train_images[:max_examples], data.train_labels[:max_examples],
      data.eval_images[:max_examples], data.eval_labels[:max_examples],
      data.num_classes, data.eval_split, prepare)
