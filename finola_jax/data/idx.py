# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""MNIST-family IDX files (MNIST, Fashion-MNIST, KMNIST): reader and splits.

A directory holds ``train-images-idx3-ubyte`` and ``train-labels-idx1-ubyte``
and, optionally, the test split ``t10k-images-idx3-ubyte`` /
``t10k-labels-idx1-ubyte``; each file raw or gzipped (``.gz`` appended).

Splits (`load`): models train on ``train-*`` and are scored on ``t10k-*``
when the directory has them. Without them, the examples at positions 5, 11,
17, ... of ``train-*`` (every `HOLDOUT_EVERY`-th: one sixth, 10,000 of
Fashion-MNIST's 60,000, the size of its official test split) are held out
for scoring and the other five sixths are the training split. Either way no
training example is ever scored. ``development=True`` carves a development
split out of the training split alone (every `DEVELOPMENT_EVERY`-th training
example: 10,000 of the 50,000), for choosing settings without looking at
the part that is reported.

Images stay ``uint8 [N, H, W]`` in memory (60,000 Fashion-MNIST images take
47 MB); `to_model_images` turns a batch of them into the models' float RGB.
Only numpy and, for ``fit="resize"``, jax: no TensorFlow.
"""

from __future__ import annotations

import dataclasses
import gzip
import os

import numpy as np

IMAGES = "images-idx3-ubyte"
LABELS = "labels-idx1-ubyte"
TRAIN = "train"
TEST = "t10k"
GZIP_MAGIC = b"\x1f\x8b"

# Held out for scoring when there is no t10k split: positions 5, 11, 17, ...
HOLDOUT_EVERY = 6
# The development validation part of the training split: its positions 4, 9,
# 14, ... (20 %).
DEVELOPMENT_EVERY = 5

# IDX type codes: numpy dtypes (big-endian, as the format stores them).
_DTYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
           0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}

FITS = ("pad", "resize")


class IdxError(ValueError):
  """An IDX file is missing, malformed or inconsistent with its partner."""


def read_idx(path: str) -> np.ndarray:
  """Reads one IDX file, gzipped or raw (told apart by the gzip magic bytes).

  Returns:
    The array with the file's dimensions, in native byte order.

  Raises:
    IdxError: a wrong magic number (not IDX), an unknown type code, data
      shorter than the header's dimensions (truncated) or longer (trailing
      bytes), or a corrupt gzip stream.
  """
  with open(path, "rb") as f:
    data = f.read()
  if data[:2] == GZIP_MAGIC:
    try:
      data = gzip.decompress(data)
    except (OSError, EOFError) as e:  # BadGzipFile is an OSError.
      raise IdxError(f"{path}: corrupt or truncated gzip data ({e}).") from e
  if len(data) < 4 or data[:2] != b"\x00\x00":
    raise IdxError(f"{path}: not an IDX file (magic {data[:4].hex() or 'empty'}; "
                   "expected 0000 then a type code and the number of dimensions).")
  type_code, ndim = data[2], data[3]
  if type_code not in _DTYPES:
    raise IdxError(f"{path}: unknown IDX type code 0x{type_code:02x}; expected "
                   f"one of {', '.join(f'0x{c:02x}' for c in _DTYPES)}.")
  header_size = 4 + 4 * ndim
  if len(data) < header_size:
    raise IdxError(f"{path}: truncated header ({len(data)} bytes; {ndim} "
                   f"dimensions need {header_size}).")
  shape = tuple(int(d) for d in np.frombuffer(data, ">u4", ndim, offset=4))
  dtype = _DTYPES[type_code]
  expected = header_size + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
  if len(data) != expected:
    problem = "truncated" if len(data) < expected else "has trailing bytes"
    raise IdxError(f"{path}: data {problem}: {len(data)} bytes, the header's "
                   f"shape {shape} of {dtype.name} needs {expected}.")
  array = np.frombuffer(data, dtype, offset=header_size).reshape(shape)
  return array.astype(dtype.newbyteorder("="))


def find_file(directory: str, split: str, kind: str) -> str | None:
  """The path of ``{split}-{kind}`` or ``{split}-{kind}.gz``, else None.

  When both exist the uncompressed one is taken (it is read faster).
  """
  name = os.path.join(directory, f"{split}-{kind}")
  for path in (name, name + ".gz"):
    if os.path.isfile(path):
      return path
  return None


def _read_images(path: str) -> np.ndarray:
  images = read_idx(path)
  if images.ndim != 3 or images.dtype != np.uint8:
    raise IdxError(f"{path}: expected uint8 images [N, H, W], got "
                   f"{images.dtype} {images.shape}.")
  return images


def _read_labels(path: str, num_images: int, images_path: str) -> np.ndarray:
  labels = read_idx(path)
  if labels.ndim != 1 or labels.dtype != np.uint8:
    raise IdxError(f"{path}: expected uint8 labels [N], got {labels.dtype} "
                   f"{labels.shape}.")
  if len(labels) != num_images:
    raise IdxError(f"{path} has {len(labels)} labels but {images_path} has "
                   f"{num_images} images.")
  return labels.astype(np.int32)


def _read_split(directory: str, split: str,
                with_labels: bool) -> tuple[np.ndarray, np.ndarray | None]:
  images_path = find_file(directory, split, IMAGES)
  if images_path is None:
    raise IdxError(f"{directory!r} has no {split}-{IMAGES}[.gz].")
  images = _read_images(images_path)
  if not with_labels:
    return images, None
  labels_path = find_file(directory, split, LABELS)
  if labels_path is None:
    raise IdxError(f"{directory!r} has {os.path.basename(images_path)} but no "
                   f"{split}-{LABELS}[.gz].")
  return images, _read_labels(labels_path, len(images), images_path)


def every_nth(count: int, every: int) -> np.ndarray:
  """bool ``[count]``: True at positions every-1, 2·every-1, ..."""
  return np.arange(count) % every == every - 1


@dataclasses.dataclass(frozen=True)
class IdxDataset:
  """A training split and the split it is scored on.

  Attributes:
    train_images: uint8 ``[N, H, W]``.
    train_labels: int32 ``[N]``, or None when loaded without labels.
    eval_images: uint8 ``[M, H, W]``, never among the training images.
    eval_labels: int32 ``[M]`` or None.
    eval_split: where the scored examples come from: ``"t10k"``, ``"holdout"``
      (every `HOLDOUT_EVERY`-th of train-*) or ``"development"`` (every
      `DEVELOPMENT_EVERY`-th of the training part; the held-out part is then
      not loaded at all).
  """
  train_images: np.ndarray
  train_labels: np.ndarray | None
  eval_images: np.ndarray
  eval_labels: np.ndarray | None
  eval_split: str

  @property
  def num_classes(self) -> int:
    """1 + the largest label of either split (needs labels)."""
    if self.train_labels is None:
      raise ValueError("This IdxDataset was loaded without labels.")
    return 1 + int(max(self.train_labels.max(initial=0),
                       self.eval_labels.max(initial=0)))


def load(directory: str, *, with_labels: bool = True,
         development: bool = False) -> IdxDataset:
  """The training split and the split to score on (see the module doc).

  Args:
    directory: holds train-* and optionally t10k-* IDX files.
    with_labels: also read (and check) the label files; pre-training needs
      only the images.
    development: score on a development part of the training split instead
      (training on the rest): for choosing settings.

  Raises:
    IdxError: a missing or malformed file, or label and image counts that
      differ. t10k labels are required (with labels) once t10k images exist.
  """
  if not os.path.isdir(directory):
    raise IdxError(f"{directory!r} is not a directory.")
  images, labels = _read_split(directory, TRAIN, with_labels)
  has_test = find_file(directory, TEST, IMAGES) is not None
  if has_test:
    train_images, train_labels = images, labels
    eval_images, eval_labels = _read_split(directory, TEST, with_labels)
    eval_split = TEST
  else:
    held_out = every_nth(len(images), HOLDOUT_EVERY)
    train_images, eval_images = images[~held_out], images[held_out]
    train_labels, eval_labels = ((None, None) if labels is None
                                 else (labels[~held_out], labels[held_out]))
    eval_split = "holdout"
  if development:
    dev = every_nth(len(train_images), DEVELOPMENT_EVERY)
    eval_images, train_images = train_images[dev], train_images[~dev]
    if train_labels is not None:
      eval_labels, train_labels = train_labels[dev], train_labels[~dev]
    eval_split = "development"
  if train_images.shape[1:] != eval_images.shape[1:]:
    raise IdxError(f"{directory!r}: training images are "
                   f"{train_images.shape[1:]}, evaluation images "
                   f"{eval_images.shape[1:]}.")
  if not len(train_images) or not len(eval_images):
    raise IdxError(f"{directory!r}: {len(train_images)} training and "
                   f"{len(eval_images)} evaluation images; both need some.")
  return IdxDataset(train_images, train_labels, eval_images, eval_labels,
                    eval_split)


def default_fit(images: np.ndarray, image_size: int) -> str:
  """``"pad"`` when ``[N, H, W]`` images fit in S×S (pixels kept), else ``"resize"``."""
  return "pad" if image_size >= max(images.shape[1:]) else "resize"


def fit_grey(images: np.ndarray, image_size: int,
             fit: str = "pad") -> np.ndarray:
  """Greyscale uint8 ``[B, H, W]`` → float32 ``[B, S, S]`` in [0, 1].

  Args:
    images: uint8 ``[B, H, W]``.
    image_size: S.
    fit: ``"pad"``: centred on a black (0) canvas, pixels unchanged (the
      MNIST family's background is black; 28 → 32 adds 2 pixels a side; an
      odd margin puts the extra pixel bottom/right); S must be at least H
      and W. ``"resize"``: bilinear, antialiased when shrinking, to S×S.
  """
  if fit not in FITS:
    raise ValueError(f"fit must be one of {FITS}, got {fit!r}.")
  if image_size < 1:
    raise ValueError(f"image_size must be >= 1, got {image_size}.")
  grey = images.astype(np.float32) / 255.0
  batch, height, width = images.shape
  if fit == "pad":
    if image_size < height or image_size < width:
      raise ValueError(f"fit='pad' cannot fit {height}×{width} images into "
                       f"{image_size}×{image_size}; use fit='resize'.")
    top, left = (image_size - height) // 2, (image_size - width) // 2
    canvas = np.zeros((batch, image_size, image_size), np.float32)
    canvas[:, top:top + height, left:left + width] = grey
    return canvas
  import jax  # pylint: disable=g-import-not-at-top (only resizing needs it)
  return np.asarray(jax.image.resize(
      grey, (batch, image_size, image_size), "bilinear", antialias=True))


def to_model_images(images: np.ndarray, image_size: int,
                    fit: str = "pad") -> np.ndarray:
  """Greyscale uint8 ``[B, H, W]`` → float32 ``[B, S, S, 3]`` in [0, 1].

  `fit_grey`, with the grey value in all three channels.
  """
  return np.repeat(fit_grey(images, image_size, fit)[..., None], 3, axis=-1)
