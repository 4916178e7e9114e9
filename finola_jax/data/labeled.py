# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Labeled images for probing frozen features (e.g. a linear classifier).

Dataset names understood by `load_labeled_split` (see `sources`):

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

from __future__ import annotations

from finola_jax.data import preprocessing
from finola_jax.data import sources
from finola_jax.data.sources import DIGITS
from finola_jax.data.sources import LabeledArrays
from finola_jax.data.sources import LabeledSplit
from finola_jax.data.sources import SPLITS
from finola_jax.data.sources import VALIDATION

__all__ = ("DIGITS", "LabeledArrays", "LabeledSplit", "SPLITS", "VALIDATION",
           "load_labeled_arrays", "load_labeled_split")


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

  Raises:
    DatasetError: the dataset has no labels or is unusable (named).
  """
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")
  preprocessing.check_image_size(image_size)
  sources.check_max_examples(max_examples)
  return sources.from_name(dataset, data_dir).labeled_split(
      split, image_size=image_size, max_examples=max_examples)


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
    DatasetError: an unknown or unusable dataset (for IDX, a missing or
      malformed file: `idx.IdxError`'s message).
  """
  preprocessing.check_image_size(image_size)
  sources.check_max_examples(max_examples)
  return sources.from_name(dataset, data_dir).labeled_arrays(
      image_size=image_size, max_examples=max_examples)
