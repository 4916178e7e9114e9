# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Image sources: the embedded photographs, folders, IDX files and TFDS datasets.

Dataset names understood by the pipelines (`input_pipeline`, `labeled`):

* ``"embedded"`` (`EMBEDDED`): photographs bundled with scikit-image, needs no
  network and no files. A handful of photos, so it suits smoke tests and small
  runs, not representation learning at scale.
* ``"folder:/some/dir"`` or the path of an existing directory: every image file
  under it (recursively).
* ``"idx:/some/dir"``: MNIST-family IDX files (`finola_jax.data.idx`: train on
  ``train-*``, score on ``t10k-*`` or, without it, a held-out sixth of
  ``train-*``), greyscale repeated in three channels and padded to the image
  size when they fit, else resized (`idx.default_fit`).
* anything else: a TFDS dataset name, optionally versioned
  (``"imagenet2012"``, ``"cifar10:3.0.2"``), read from ``data_dir``.

This module finds and decodes images; `preprocessing` resizes and augments
them and `input_pipeline` batches them.
"""

import functools
import os

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from finola_jax.data import idx

EMBEDDED = "embedded"
FOLDER_PREFIX = "folder:"
IDX_PREFIX = "idx:"

# scikit-image photographs that ship inside the wheel (no pooch download; each
# checked to load with the network disabled). Names are `skimage.data`
# functions. Natural photographs only (people, objects, textures, microscopy,
# astronomy); synthetic images (colorwheel, logo, checkerboard, binary_blobs)
# and near-flat ones (cell, clock) are left out. `cat` is an alias of
# `chelsea`, so it must never appear in the training list.
EMBEDDED_TRAIN_PHOTOS = (
    "astronaut",
    "brick",
    "coffee",
    "coins",
    "grass",
    "gravel",
    "hubble_deep_field",
    "immunohistochemistry",
    "moon",
    "page",
    "retina",
    "stereo_motorcycle",  # the left view; the right one is a near-duplicate.
    "text",
)
# Held out: never used for training. A colour animal portrait, a colour outdoor
# scene and a greyscale portrait.
EMBEDDED_VALIDATION_PHOTOS = ("chelsea", "rocket", "camera")

# Files `tf.io.decode_image` can read.
IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".webp")

# A folder source holds out the files at sorted positions 9, 19, 29, ...
FOLDER_HOLDOUT_EVERY = 10


def check_max_examples(max_examples: int | None) -> None:
  """Raises ValueError unless max_examples is None or >= 1."""
  if max_examples is not None and max_examples < 1:
    raise ValueError(f"max_examples must be >= 1 or None, got {max_examples}.")


def folder_path(dataset: str) -> str | None:
  """The directory `dataset` names ("folder:DIR" or an existing DIR), else None.

  Raises:
    ValueError: "folder:DIR" where DIR is not a directory.
  """
  if dataset.startswith(FOLDER_PREFIX):
    directory = dataset[len(FOLDER_PREFIX):]
    if not os.path.isdir(directory):
      raise ValueError(f"Dataset {dataset!r}: {directory!r} is not a directory.")
    return directory
  return dataset if os.path.isdir(dataset) else None


def idx_path(dataset: str) -> str | None:
  """The directory `dataset` names ("idx:DIR"), else None.

  Raises:
    ValueError: "idx:DIR" where DIR is not a directory.
  """
  if not dataset.startswith(IDX_PREFIX):
    return None
  directory = dataset[len(IDX_PREFIX):]
  if not os.path.isdir(directory):
    raise ValueError(f"Dataset {dataset!r}: {directory!r} is not a directory.")
  return directory


@functools.lru_cache(maxsize=2)
def load_idx(directory: str, with_labels: bool) -> idx.IdxDataset:
  """`idx.load` of the reported splits, cached: a run reads its files once.

  Raises:
    idx.IdxError: a missing or malformed file (a ValueError).
  """
  return idx.load(directory, with_labels=with_labels)


def list_image_files(directory: str, *, recursive: bool) -> list[str]:
  """Image files in `directory`, sorted by path; raises if there are none."""
  if not os.path.isdir(directory):
    raise ValueError(f"{directory!r} is not a directory.")
  if recursive:
    paths = [os.path.join(root, name)
             for root, _, names in os.walk(directory) for name in names]
  else:
    paths = [os.path.join(directory, name) for name in os.listdir(directory)]
  paths = sorted(path for path in paths
                 if path.lower().endswith(IMAGE_EXTENSIONS)
                 and os.path.isfile(path))
  if not paths:
    raise ValueError(
        f"No image files ({', '.join(IMAGE_EXTENSIONS)}) in {directory!r}.")
  return paths


def holdout_positions(count: int, every: int) -> list[int]:
  """Positions every-1, 2*every-1, ... of `count` items; the last if none.

  Holding out by position in a sorted list is deterministic and spreads the
  held-out items over the list. At least one item is held out when there are
  two or more, so a small source still has a validation set.
  """
  positions = list(range(every - 1, count, every))
  if not positions and count >= 2:
    positions = [count - 1]
  return positions


def decode_image_file(path: str) -> np.ndarray:
  """The image at `path` as uint8 [H, W, 3] (greyscale repeated, alpha dropped)."""
  return read_image_file(tf.constant(path)).numpy()


def read_image_file(path: tf.Tensor) -> tf.Tensor:
  """`decode_image_file` inside tf.data: a path tensor -> uint8 [H, W, 3]."""
  return decode_image(tf.io.read_file(path))


def decode_image(encoded: tf.Tensor) -> tf.Tensor:
  """Encoded image bytes -> uint8 [H, W, 3] (greyscale repeated, alpha dropped)."""
  return tf.io.decode_image(encoded, channels=3, expand_animations=False)


@functools.cache
def embedded_photo(name: str) -> np.ndarray:
  """A bundled scikit-image photograph as uint8 [H, W, 3]."""
  # Imported here: importing scikit-image is slow and only this source needs it.
  import skimage.data  # pylint: disable=g-import-not-at-top

  photo = getattr(skimage.data, name)()
  if isinstance(photo, tuple):  # stereo_motorcycle: (left, right, disparity).
    photo = photo[0]
  if photo.ndim == 2:
    photo = np.repeat(photo[..., None], 3, axis=-1)
  return photo[..., :3]


def folder_split_paths(directory: str) -> tuple[list[str], list[str]]:
  """(train, validation) image paths of a folder source.

  Validation is the files at sorted positions `holdout_positions(count,
  FOLDER_HOLDOUT_EVERY)`: one in ten, at least one.
  """
  paths = list_image_files(directory, recursive=True)
  if len(paths) < 2:
    raise ValueError(
        f"{directory!r} holds one image; a folder source needs at least two "
        "(one is held out for validation).")
  held_out = set(holdout_positions(len(paths), FOLDER_HOLDOUT_EVERY))
  return ([p for i, p in enumerate(paths) if i not in held_out],
          [paths[i] for i in sorted(held_out)])


def tfds_builder(name: str, data_dir: str | None) -> tfds.core.DatasetBuilder:
  """The prepared TFDS builder for `name` ("name" or "name:version").

  Prepares the dataset if needed, as `tfds.load` does: datasets with a manual
  download (ImageNet) are built from `<data_dir>/downloads/manual/`.
  """
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.DatasetNotFoundError as e:
    raise ValueError(
        f"Unknown dataset {name!r}: it is not {EMBEDDED!r}, not "
        f"'{FOLDER_PREFIX}<dir>' or an existing directory, and not a TFDS "
        "dataset name.") from e
  builder.download_and_prepare()
  return builder


def validation_split_name(builder: tfds.core.DatasetBuilder) -> str:
  """"validation" if the dataset has it, else "test"."""
  for split in ("validation", "test"):
    if split in builder.info.splits:
      return split
  raise ValueError(
      f"TFDS dataset {builder.name!r} has neither a 'validation' nor a 'test' "
      f"split (splits: {sorted(builder.info.splits)}).")


def limit_split(builder: tfds.core.DatasetBuilder, split: str,
                max_examples: int | None) -> str:
  """`split` cut to its first `max_examples` examples (all if None)."""
  if max_examples is None:
    return split
  return f"{split}[:{min(max_examples, builder.info.splits[split].num_examples)}]"


def read_tfds_split(builder: tfds.core.DatasetBuilder, split,
                    **as_dataset_kwargs) -> tf.data.Dataset:
  """Examples of `split` with the "image" still encoded (decode later, cheaper)."""
  return builder.as_dataset(
      split=split, decoders={"image": tfds.decode.SkipDecoding()},
      **as_dataset_kwargs)

