# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Image sources: one class per kind of dataset, chosen once by `from_name`.

Dataset names understood by the pipelines (`input_pipeline`, `labeled`):

* ``"embedded"`` (`EMBEDDED`, `EmbeddedSource`): photographs bundled with
  scikit-image, needs no network and no files. A handful of photos, so it
  suits smoke tests and small runs, not representation learning at scale. No
  labels.
* ``"digits"`` (`DIGITS`, `DigitsSource`): scikit-learn's bundled 8x8
  handwritten digits (1797 images, 10 classes), upscaled and made RGB. Labeled
  splits only (for probing).
* ``"folder:/some/dir"`` or the path of an existing directory
  (`FolderSource`): every image file under it (recursively); its labeled
  splits take one subfolder per class. A file that cannot be decoded (a
  truncated JPEG, a text file named ``.png``) is skipped with a warning that
  names it.
* ``"idx:/some/dir"`` (`IdxSource`): MNIST-family IDX files
  (`finola_jax.data.idx`: train on ``train-*``, score on ``t10k-*`` or,
  without it, a held-out sixth of ``train-*``), greyscale repeated in three
  channels and padded to the image size when they fit, else resized
  (`idx.default_fit`).
* ``"coco:/some/dir"`` (`CocoSource`): a COCO-format detection set in COCO's
  layout (`finola_jax.data.coco`): its `Source.detection_split`s give images
  with padded boxes; its plain image batches are the same images without
  boxes (pre-training or reconstruction on them). Split names default to
  ``train2017`` and ``val2017`` (``from_name(..., splits=...)``).
* anything else (`TfdsSource`): a TFDS dataset name, optionally versioned
  (``"imagenet2012"``, ``"cifar10:3.0.2"``), read from ``data_dir``. A TFDS
  detection set with COCO's features (``"coco/2017"``) also gives
  `Source.detection_split`s (`TfdsDetectionSplit`); it must be prepared
  already: nothing is downloaded for it.

A kind is a subclass of `Source` with a `Source.name` (a whole dataset name)
or a `Source.prefix` (``"prefix:ARGUMENT"``); defining the class registers it
with `from_name`. The pipelines call its methods and never ask which kind
they hold.

TensorFlow is imported on first use: the photograph lists, `embedded_photo`
and the module itself work without it.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import os
import re
from typing import Callable, ClassVar, Iterator

import numpy as np
from absl import logging
from etils import epy

from finola_jax.data import coco
from finola_jax.data import idx
from finola_jax.data import preprocessing
from finola_jax.data.layout import BatchLayout

with epy.lazy_imports():
  # pylint: disable=g-import-not-at-top
  import tensorflow as tf
  import tensorflow_datasets as tfds
  # pylint: enable=g-import-not-at-top

EMBEDDED = "embedded"
DIGITS = "digits"
FOLDER_PREFIX = "folder:"
IDX_PREFIX = "idx:"
COCO_PREFIX = "coco:"

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

SPLITS = ("train", "validation")
# Labeled sources that split by holding out call their scored split this in
# `LabeledArrays.eval_split`.
VALIDATION = "validation"
# In-memory labeled sources hold out, per class, the examples at positions 4,
# 9, 14, ... of the class's sorted list: 20 %.
LABELED_HOLDOUT_EVERY = 5

# Encoded (not decoded) TFDS records shuffled together: ~1 GB for ImageNet.
_TFDS_SHUFFLE_BUFFER = 10_000
# IDX images fitted to the image size this many at a time (bounds the float
# copy a resize makes).
_IDX_FIT_CHUNK = 4096


class DatasetError(ValueError):
  """A dataset the user must fix: a missing folder, no images, a bad IDX or
  COCO annotation file, an unknown name. Raised before a run writes anything
  (`Source.check`)."""


def check_max_examples(max_examples: int | None) -> None:
  """Raises ValueError unless max_examples is None or >= 1."""
  if max_examples is not None and max_examples < 1:
    raise ValueError(f"max_examples must be >= 1 or None, got {max_examples}.")


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


# ------------------------------------------------------------ image files ---


def list_image_files(directory: str, *, recursive: bool) -> list[str]:
  """Image files in `directory`, sorted by path.

  Raises:
    DatasetError: `directory` is not a directory or holds no image files.
  """
  if not os.path.isdir(directory):
    raise DatasetError(f"{directory!r} is not a directory.")
  if recursive:
    paths = [os.path.join(root, name)
             for root, _, names in os.walk(directory) for name in names]
  else:
    paths = [os.path.join(directory, name) for name in os.listdir(directory)]
  paths = sorted(path for path in paths
                 if path.lower().endswith(IMAGE_EXTENSIONS)
                 and os.path.isfile(path))
  if not paths:
    raise DatasetError(
        f"No image files ({', '.join(IMAGE_EXTENSIONS)}) in {directory!r}.")
  return paths


def decode_image(encoded: tf.Tensor) -> tf.Tensor:
  """Encoded image bytes -> uint8 [H, W, 3] (greyscale repeated, alpha dropped)."""
  return tf.io.decode_image(encoded, channels=3, expand_animations=False)


def decode_random_crop(encoded: tf.Tensor, uniforms: tf.Tensor,
                       image_size: int) -> tf.Tensor:
  """A random resized, randomly flipped crop of an encoded image.

  A JPEG decodes only the crop's window (`tf.image.decode_and_crop_jpeg`:
  rows below it are never decoded, columns beside it are not converted);
  other formats decode whole and are sliced. The window is
  `preprocessing.random_crop_window`, resized by `preprocessing.resize_crop`.

  Args:
    encoded: string [], encoded image bytes.
    uniforms: float32 [5], U[0, 1) draws: 4 for the window, 1 for the flip.
    image_size: S.

  Returns:
    float32 [S, S, 3] in [0, 1].
  """

  def window(height, width):
    return preprocessing.random_crop_window(height, width, uniforms[:4])

  def from_jpeg():
    shape = tf.image.extract_jpeg_shape(encoded)
    return tf.image.decode_and_crop_jpeg(encoded, window(shape[0], shape[1]),
                                         channels=3)

  def from_other_format():
    image = decode_image(encoded)
    top, left, height, width = tf.unstack(
        window(tf.shape(image)[0], tf.shape(image)[1]))
    return image[top:top + height, left:left + width]

  crop = tf.cond(tf.io.is_jpeg(encoded), from_jpeg, from_other_format)
  return preprocessing.resize_crop(crop, image_size, uniforms[4] < 0.5)


def decode_image_file(path: str) -> np.ndarray:
  """The image at `path` as uint8 [H, W, 3] (greyscale repeated, alpha dropped).

  Raises:
    tf.errors.OpError: the file cannot be read or decoded.
  """
  return decode_image(tf.io.read_file(path)).numpy()


def decode_or_skip(path: str) -> np.ndarray | None:
  """`decode_image_file`, or None with a warning naming a file it cannot decode.

  Bad files are skipped rather than checked up front: a truncated JPEG has a
  good header, so only a full decode finds it, and the pipeline decodes each
  file anyway. Which files are skipped depends on the files alone, so every
  process skips the same ones.
  """
  try:
    return decode_image_file(path)
  except tf.errors.OpError as e:
    # TensorFlow wraps the decoder's words in the op's name and device.
    reason = re.sub(r"\{\{.*?\}\}|\[Op:\w+\]", "", e.message).strip()
    logging.warning("Skipping %s: it cannot be decoded as an image (%s).",
                    path, reason)
    return None


def decode_files(paths: list[str]) -> tuple[list[np.ndarray], list[int]]:
  """(the decodable images of `paths`, their positions); logs how many failed."""
  images, kept = [], []
  for position, path in enumerate(paths):
    image = decode_or_skip(path)
    if image is not None:
      images.append(image)
      kept.append(position)
  if len(kept) < len(paths):
    logging.warning("Skipped %d of %d image files that cannot be decoded.",
                    len(paths) - len(kept), len(paths))
  return images, kept


def _decode_in_stream(path: tf.Tensor) -> np.ndarray:
  """`decode_or_skip` inside tf.data; an empty [0, 0, 3] image for a bad file."""
  image = decode_or_skip(path.numpy().decode())
  return np.zeros((0, 0, 3), np.uint8) if image is None else image


def file_examples(paths: list[str], layout: BatchLayout,
                  image_size: int) -> tuple[tf.data.Dataset, int]:
  """(this process's share of the files, decoded lazily; the largest share).

  Examples are {"image": float32 [S, S, 3] (centre square, resized), "index":
  int32 [] (position in `paths`)}; undecodable files are skipped (their
  index is missing, and the batches are padded instead).
  """
  share = layout.interleaved_share(len(paths))
  files = tf.data.Dataset.from_tensor_slices(
      {"path": np.array(paths)[share], "index": share.astype(np.int32)})

  def decode(file):
    image = tf.py_function(_decode_in_stream, [file["path"]], tf.uint8)
    image.set_shape([None, None, 3])
    return {"image": image, "index": file["index"]}

  examples = (files.map(decode, num_parallel_calls=tf.data.AUTOTUNE)
              .filter(lambda example: tf.size(example["image"]) > 0)
              .map(lambda example: dict(
                  example, image=preprocessing.center_crop_resize(
                      example["image"], image_size)),
                   num_parallel_calls=tf.data.AUTOTUNE))
  return examples, layout.largest_share(len(paths))


def store_streamed(image: tf.Tensor, image_size: int
                   ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
  """(image stored for training, its height, its width) for `padded_batch`.

  Streamed images are stored smaller than in-memory ones
  (`preprocessing.TFDS_STORED_SIZE_FACTOR`): they are decoded per batch.
  """
  stored = preprocessing.store_for_training(
      image, image_size, preprocessing.TFDS_STORED_SIZE_FACTOR)
  return stored, tf.shape(stored)[0], tf.shape(stored)[1]


def crop_streamed_batch(pixels: tf.Tensor, heights: tf.Tensor,
                        widths: tf.Tensor, uniforms: tf.Tensor,
                        image_size: int,
                        colour_augmentation: bool) -> tf.Tensor:
  """One random resized crop of each image of a padded batch.

  Args:
    pixels: float32 [B, H, W, 3], `store_streamed` images padded together.
    heights: int32 [B], each image's own height; widths likewise.
    uniforms: float32 [B, 9] U[0, 1) draws: 5 for the crop and flip, 4 for
      the colour.
    image_size: S.
    colour_augmentation: whether to permute and scale colour channels.

  Returns:
    float32 [B, S, S, 3] in [0, 1].
  """
  stored = preprocessing.StoredImages(
      pixels, tf.cast(heights, tf.float32), tf.cast(widths, tf.float32))
  image_index = tf.range(tf.shape(pixels)[0])
  boxes = preprocessing.random_crop_boxes(stored, image_index, uniforms[:, :5],
                                          image_size)
  crops = preprocessing.crops(stored, boxes, image_index, image_size)
  if colour_augmentation:
    crops = preprocessing.augment_colour(crops, uniforms[:, 5:])
  return crops


def _decode_or_black(path: tf.Tensor) -> np.ndarray:
  """`decode_or_skip` inside tf.data; one black pixel for a bad file."""
  image = decode_or_skip(path.numpy().decode())
  return np.zeros((1, 1, 3), np.uint8) if image is None else image


def drawn_file_batches(paths: list[str], *, image_size: int,
                       layout: BatchLayout, seed: int, start_step: int,
                       colour_augmentation: bool) -> tf.data.Dataset:
  """Endless augmented batches of image files drawn with replacement.

  Row k of the global batch at step t is the file at position
  ``floor(u * N)`` for u in row k of a stateless draw seeded by (seed, t),
  as for the in-memory sources: which files a step reads is a function of
  (seed, t) alone and resuming at step t costs nothing. This process decodes
  only its rows, as the batches are consumed, so a split of any size
  streams. Images are stored and cropped as TFDS images are
  (`store_streamed`, `crop_streamed_batch`). A file that cannot be decoded
  is skipped with a warning naming it and a black image takes its place,
  which keeps every batch full.

  Returns {"image": float32 [local_batch, S, S, 3]} for steps start_step, ...
  """
  num_files = len(paths)
  all_paths = tf.constant(paths)

  def files_of_step(step):
    uniforms = tf.random.stateless_uniform(
        [layout.global_batch_size, 10],
        seed=tf.stack([tf.constant(seed, tf.int64), step]))[layout.local_rows]
    position = tf.minimum(tf.cast(uniforms[:, 0] * num_files, tf.int32),
                          num_files - 1)
    return tf.data.Dataset.from_tensor_slices(
        (tf.gather(all_paths, position), uniforms[:, 1:]))

  def decode_and_store(path, uniforms):
    image = tf.py_function(_decode_or_black, [path], tf.uint8)
    image.set_shape([None, None, 3])
    return store_streamed(image, image_size) + (uniforms,)

  def augment_batch(pixels, heights, widths, uniforms):
    return {"image": crop_streamed_batch(pixels, heights, widths, uniforms,
                                         image_size, colour_augmentation)}

  return (tf.data.Dataset.counter(start_step).flat_map(files_of_step)
          .map(decode_and_store, num_parallel_calls=tf.data.AUTOTUNE)
          .padded_batch(layout.local_batch_size, drop_remainder=True)
          .map(augment_batch, num_parallel_calls=tf.data.AUTOTUNE))


# ---------------------------------------------------------- labeled splits ---


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

  def arrays(self) -> tuple[np.ndarray, np.ndarray]:
    """(images float32 [N, S, S, 3], labels int32 [N]) of one pass."""
    batches = list(self.batches(256))
    return (np.concatenate([b["image"] for b in batches]),
            np.concatenate([b["label"] for b in batches]))


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


def _already_images(images: np.ndarray) -> np.ndarray:
  """`LabeledArrays.prepare` of sources stored as float32 images."""
  return images


def in_memory_labeled_split(images: np.ndarray, labels: np.ndarray,
                            num_classes: int, split: str,
                            max_examples: int | None) -> LabeledSplit:
  """Holds out every `LABELED_HOLDOUT_EVERY`-th example of each class.

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
    held_out[members[holdout_positions(len(members),
                                       LABELED_HOLDOUT_EVERY)]] = True
  chosen = np.flatnonzero(held_out if split == VALIDATION else ~held_out)
  chosen = chosen[:max_examples]
  examples = {"image": images[chosen].astype(np.float32),
              "label": labels[chosen].astype(np.int32)}
  return LabeledSplit(
      num_classes=num_classes, num_examples=len(chosen),
      dataset_fn=lambda: tf.data.Dataset.from_tensor_slices(examples))


# ------------------------------------------------------- in-memory batches ---


def in_memory_train_batches(stored: preprocessing.StoredImages, *,
                            image_size: int, layout: BatchLayout, seed: int,
                            start_step: int,
                            colour_augmentation: bool) -> tf.data.Dataset:
  """Batches of random crops of stored images, a pure function of (seed, step).

  Returns {"image": float32 [local_batch, S, S, 3]} for steps start_step, ...
  """
  num_images = len(stored.pixels)

  def batch_for_step(step):
    # Row k of this draw belongs to example k of the global batch: every
    # layout produces the same global batch, each process its own rows. Boxes
    # are computed for the whole global batch and sliced afterwards because
    # vectorised float ops can round differently with the tensor length.
    uniforms = tf.random.stateless_uniform(
        [layout.global_batch_size, 10],
        seed=tf.stack([tf.constant(seed, tf.int64), step]))
    image_index = tf.minimum(
        tf.cast(uniforms[:, 0] * num_images, tf.int32), num_images - 1)
    boxes = preprocessing.random_crop_boxes(stored, image_index,
                                            uniforms[:, 1:6], image_size)
    rows = layout.local_rows
    crops = preprocessing.crops(stored, boxes[rows], image_index[rows],
                                image_size)
    if colour_augmentation:
      crops = preprocessing.augment_colour(crops, uniforms[rows, 6:])
    return {"image": crops}

  return tf.data.Dataset.counter(start_step).map(
      batch_for_step, num_parallel_calls=tf.data.AUTOTUNE)


def in_memory_eval_examples(images: np.ndarray, layout: BatchLayout
                            ) -> tuple[tf.data.Dataset, int]:
  """(this process's interleaved share of images [N, S, S, 3]; largest share)."""
  share = layout.interleaved_share(len(images))
  examples = tf.data.Dataset.from_tensor_slices(
      {"image": images[share], "index": share.astype(np.int32)})
  return examples, layout.largest_share(len(images))


# ------------------------------------------------------ streamed batches ---


def streaming_train_batches(encoded: tf.data.Dataset, *, image_size: int,
                            batch_size: int, batch_seed: tf.Tensor,
                            start_step: int, colour_augmentation: bool,
                            decode_crop_only: bool) -> tf.data.Dataset:
  """Augmented batches of encoded images, decoded as they stream past.

  Step t's draws are `tf.random.stateless_uniform` [batch_size, 9] seeded
  by `batch_seed` folded with t; row k serves the step's k-th image: 4 for
  its crop box, 1 for its flip, 4 for its colours.

  Args:
    encoded: endless string [] encoded images; its first is image 0 of step
      `start_step` (the caller shuffles, repeats and skips).
    image_size: S.
    batch_size: images per batch.
    batch_seed: int64 [2].
    start_step: the step of the first batch.
    colour_augmentation: whether to permute and scale colour channels.
    decode_crop_only: False: decode each image whole, resize it so its
      shorter side is `preprocessing.TFDS_STORED_SIZE_FACTOR` * S
      (antialiased), pad a batch into one tensor and crop it
      (`preprocessing.crops`, bilinear). True: the same crop boxes, in whole
      pixels of the encoded image, decoded alone and resized
      (`decode_random_crop`); several times cheaper per image (no enlarged
      float copy of the whole image is made).

  Returns:
    {"image": float32 [batch_size, S, S, 3] in [0, 1]} for steps
    start_step, start_step + 1, ...
  """

  def step_uniforms(step):
    return tf.random.stateless_uniform(
        [batch_size, 9],
        seed=tf.random.experimental.stateless_fold_in(batch_seed, step))

  def colours(crops, uniforms):
    if colour_augmentation:
      crops = preprocessing.augment_colour(crops, uniforms)
    return {"image": crops}

  if decode_crop_only:

    def decode_crop(position, encoded_image):
      uniforms = step_uniforms(start_step + position // batch_size)[
          position % batch_size]
      return (decode_random_crop(encoded_image, uniforms[:5], image_size),
              uniforms[5:])

    return (encoded.enumerate()
            .map(decode_crop, num_parallel_calls=tf.data.AUTOTUNE)
            .batch(batch_size, drop_remainder=True)
            .map(colours, num_parallel_calls=tf.data.AUTOTUNE))

  def decode_and_store(encoded_image):
    return store_streamed(decode_image(encoded_image), image_size)

  def augment_batch(step, batch):
    return {"image": crop_streamed_batch(*batch, step_uniforms(step),
                                         image_size, colour_augmentation)}

  # Images are padded into one tensor per batch so the batch is augmented by
  # a few ops instead of a few per image.
  return (encoded.map(decode_and_store, num_parallel_calls=tf.data.AUTOTUNE)
          .padded_batch(batch_size, drop_remainder=True)
          .enumerate(start=start_step)
          .map(augment_batch, num_parallel_calls=tf.data.AUTOTUNE))


# ------------------------------------------------------------- interface ---


class Source(abc.ABC):
  """A kind of dataset: where its images come from and how they are split.

  Subclasses set `name` (the dataset string is exactly it) or `prefix` (the
  dataset string is ``prefix + argument``; the class is built with the
  argument) and are registered with `from_name` when defined. A method a
  kind cannot serve raises `DatasetError`.
  """

  name: ClassVar[str | None] = None
  prefix: ClassVar[str | None] = None
  _by_name: ClassVar[dict[str, type[Source]]] = {}
  _by_prefix: ClassVar[dict[str, type[Source]]] = {}

  def __init_subclass__(cls, **kwargs):
    super().__init_subclass__(**kwargs)
    # Only what the class itself declares: a subclass of a kind is not the
    # same kind again.
    for key, registry in ((cls.__dict__.get("name"), Source._by_name),
                          (cls.__dict__.get("prefix"), Source._by_prefix)):
      if key is not None:
        if key in registry:
          raise TypeError(f"{cls.__name__} and {registry[key].__name__} both "
                          f"claim {key!r}.")
        registry[key] = cls

  @property
  @abc.abstractmethod
  def dataset(self) -> str:
    """The dataset string this source was made from."""

  def check(self) -> None:
    """Cheap checks a run makes before it writes anything.

    Raises:
      DatasetError: what the user must fix, named.
    """

  @abc.abstractmethod
  def train_batches(self, *, image_size: int, layout: BatchLayout, seed: int,
                    start_step: int, colour_augmentation: bool,
                    decode_crop_only: bool) -> tf.data.Dataset:
    """Endless augmented batches {"image": float32 [local_batch, S, S, 3]}.

    The batch at step t (the first is `start_step`) is a function of (seed,
    t) and of `layout` as `input_pipeline`'s module doc describes.
    `decode_crop_only` concerns sources that decode images as they stream
    (see `streaming_train_batches`); the others decode once and ignore it.
    """

  @abc.abstractmethod
  def eval_examples(self, *, image_size: int, layout: BatchLayout,
                    max_examples: int | None) -> tuple[tf.data.Dataset, int]:
    """This process's share of the validation split, and the largest share.

    Examples are {"image": float32 [S, S, 3] in [0, 1], "index": int32 []},
    index the position in the split (of its first `max_examples`).
    """

  def with_splits(self, train: str | None, evaluation: str | None) -> Source:
    """This dataset with its training and evaluation splits chosen by name
    (None keeps the kind's own).

    Raises:
      DatasetError: a name is given and the kind's splits are fixed.
    """
    if train is None and evaluation is None:
      return self
    raise DatasetError(
        f"{self.dataset!r} has fixed splits; only '{COCO_PREFIX}DIR' and TFDS "
        "datasets take split names.")

  def detection_split(self, split: str, *, image_size: int,
                      max_boxes: int) -> coco.DetectionData:
    """A split ("train" or "validation") with boxes, for detection.

    Its batches hold images letterboxed to S×S and boxes padded to
    `max_boxes` with a mask (see `coco.DetectionData`).

    Raises:
      DatasetError: the dataset has no boxes, or an image has more than
        `max_boxes`.
    """
    del split, image_size, max_boxes
    raise DatasetError(
        f"{self.dataset!r} has no boxes; detection needs a COCO-format set, "
        f"'{COCO_PREFIX}DIR' (COCO's layout), or a prepared TFDS detection "
        "set such as 'coco/2017'.")

  def labeled_split(self, split: str, *, image_size: int,
                    max_examples: int | None) -> LabeledSplit:
    """A split ("train" or "validation") of the labeled dataset, for probing."""
    del split, image_size, max_examples
    raise DatasetError(
        f"{self.dataset!r} has no labels; use {DIGITS!r}, a "
        "class-per-subfolder directory or a labeled TFDS dataset.")

  def labeled_arrays(self, *, image_size: int,
                     max_examples: int | None) -> LabeledArrays:
    """Both labeled splits in memory (see `LabeledArrays`)."""
    train, validation = (self.labeled_split(
        split, image_size=image_size, max_examples=max_examples)
                         for split in SPLITS)
    return LabeledArrays(*train.arrays(), *validation.arrays(),
                         train.num_classes, VALIDATION, _already_images)


def from_name(dataset: str, data_dir: str | None = None, *,
              splits: tuple[str, str] | None = None) -> Source:
  """The source `dataset` names (see the module doc); `data_dir` is TFDS's.

  `splits`: the names of its (training, evaluation) splits, for kinds whose
  splits are chosen by name (`Source.with_splits`); None (or a None name)
  keeps the kind's.

  Raises:
    DatasetError: a prefixed name whose argument is unusable (e.g.
      "folder:DIR" where DIR is not a directory), or `splits` for a kind
      whose splits are fixed.
  """
  source = _source(dataset, data_dir)
  return source if splits is None else source.with_splits(*splits)


def _source(dataset: str, data_dir: str | None) -> Source:
  if dataset in Source._by_name:
    return Source._by_name[dataset]()
  for prefix, kind in Source._by_prefix.items():
    if dataset.startswith(prefix):
      return kind(dataset[len(prefix):])
  if os.path.isdir(dataset):
    return FolderSource(dataset)
  return TfdsSource(dataset, data_dir)


# ----------------------------------------------------------------- kinds ---


@functools.cache
def _embedded_training_images(image_size: int) -> preprocessing.StoredImages:
  # Cached: resizing the large photographs dominates creating an iterator.
  return preprocessing.stack_for_training(
      [embedded_photo(name) for name in EMBEDDED_TRAIN_PHOTOS], image_size)


class EmbeddedSource(Source):
  """The bundled photographs: `EMBEDDED_TRAIN_PHOTOS` for training, and each
  of `EMBEDDED_VALIDATION_PHOTOS`' centre square and its quadrants (15 views)
  for validation."""

  name = EMBEDDED

  @property
  def dataset(self) -> str:
    return EMBEDDED

  def train_batches(self, *, image_size, layout, seed, start_step,
                    colour_augmentation, decode_crop_only):
    del decode_crop_only  # Decoded once, into memory.
    return in_memory_train_batches(
        _embedded_training_images(image_size), image_size=image_size,
        layout=layout, seed=seed, start_step=start_step,
        colour_augmentation=colour_augmentation)

  def eval_examples(self, *, image_size, layout, max_examples):
    images = np.concatenate([
        preprocessing.centre_and_quadrant_crops(embedded_photo(name),
                                                image_size)
        for name in EMBEDDED_VALIDATION_PHOTOS])[:max_examples]
    return in_memory_eval_examples(images, layout)


class DigitsSource(Source):
  """scikit-learn's 8x8 digits, labeled: for probing only."""

  name = DIGITS

  @property
  def dataset(self) -> str:
    return DIGITS

  def _no_images(self):
    return DatasetError(f"{DIGITS!r} is a labeled dataset for probing; it "
                        "serves no training or evaluation images.")

  def train_batches(self, **unused_kwargs):
    raise self._no_images()

  def eval_examples(self, **unused_kwargs):
    raise self._no_images()

  def labeled_split(self, split, *, image_size, max_examples):
    # Imported here: only this source needs scikit-learn.
    from sklearn import datasets  # pylint: disable=g-import-not-at-top

    digits = datasets.load_digits()
    images = digits.images[..., None].astype(np.float32) / 16.0  # 0..16.
    images = tf.image.resize(images, [image_size, image_size],
                             method="bilinear", antialias=True).numpy()
    return in_memory_labeled_split(np.repeat(images, 3, axis=-1),
                                   digits.target, len(digits.target_names),
                                   split, max_examples)


class DirectorySource(Source):
  """A kind whose argument is a directory (``prefix + DIR``), checked to exist."""

  def __init__(self, directory: str):
    if not os.path.isdir(directory):
      raise DatasetError(f"{directory!r} is not a directory.")
    self.directory = directory

  @property
  def dataset(self) -> str:
    return self.prefix + self.directory


class FolderSource(DirectorySource):
  """Image files under a directory, recursively, in sorted path order.

  Training and validation: the files at sorted positions 9, 19, 29, ...
  (`FOLDER_HOLDOUT_EVERY`; at least one) are the validation split, the others
  are decoded into memory for training (`preprocessing.stack_for_training`).
  Labeled splits: one subfolder per class. Undecodable files are skipped with
  a warning naming each (`decode_or_skip`).
  """

  prefix = FOLDER_PREFIX

  def check(self):
    self.split_paths()

  def split_paths(self) -> tuple[list[str], list[str]]:
    """(train, validation) image paths."""
    paths = list_image_files(self.directory, recursive=True)
    if len(paths) < 2:
      raise DatasetError(
          f"{self.directory!r} holds one image; a folder source needs at least "
          "two (one is held out for validation).")
    held_out = set(holdout_positions(len(paths), FOLDER_HOLDOUT_EVERY))
    return ([p for i, p in enumerate(paths) if i not in held_out],
            [paths[i] for i in sorted(held_out)])

  def train_batches(self, *, image_size, layout, seed, start_step,
                    colour_augmentation, decode_crop_only):
    del decode_crop_only  # Decoded once, into memory.
    images, _ = decode_files(self.split_paths()[0])
    if not images:
      raise DatasetError(
          f"No training image in {self.directory!r} can be decoded.")
    return in_memory_train_batches(
        preprocessing.stack_for_training(images, image_size),
        image_size=image_size, layout=layout, seed=seed, start_step=start_step,
        colour_augmentation=colour_augmentation)

  def eval_examples(self, *, image_size, layout, max_examples):
    return file_examples(self.split_paths()[1][:max_examples], layout,
                         image_size)

  def labeled_split(self, split, *, image_size, max_examples):
    subfolders = sorted(name for name in os.listdir(self.directory)
                        if os.path.isdir(os.path.join(self.directory, name)))
    if len(subfolders) < 2:
      raise DatasetError(
          f"{self.directory!r} has {len(subfolders)} class subfolder(s); a "
          "labeled folder needs at least two (one per class).")
    paths, labels = [], []
    for label, name in enumerate(subfolders):
      class_paths = list_image_files(os.path.join(self.directory, name),
                                     recursive=True)
      paths += class_paths
      labels += [label] * len(class_paths)
    images, kept = decode_files(paths)
    if not images:
      raise DatasetError(f"No image in {self.directory!r} can be decoded.")
    images = np.stack([preprocessing.center_crop_resize(image,
                                                        image_size).numpy()
                       for image in images])
    return in_memory_labeled_split(images, np.array(labels)[kept],
                                   len(subfolders), split, max_examples)


@functools.lru_cache(maxsize=2)
def load_idx(directory: str, with_labels: bool) -> idx.IdxDataset:
  """`idx.load` of the reported splits, cached: a run reads its files once.

  Raises:
    DatasetError: a missing or malformed file (`idx.IdxError`'s message).
  """
  try:
    return idx.load(directory, with_labels=with_labels)
  except idx.IdxError as e:
    raise DatasetError(str(e)) from e


def idx_stored_images(images: np.ndarray, image_size: int) -> np.ndarray:
  """IDX images uint8 ``[N, H, W]`` fitted to uint8 ``[N, S, S]`` (grey).

  Padding keeps the pixels exactly; resized images are rounded back to uint8
  so that 50,000 of them stay ~50 MB in memory.
  """
  fitted = np.concatenate([
      idx.fit_grey(images[start:start + _IDX_FIT_CHUNK], image_size,
                   idx.default_fit(images, image_size))
      for start in range(0, len(images), _IDX_FIT_CHUNK)])
  return np.round(fitted * 255.0).astype(np.uint8)


class IdxSource(DirectorySource):
  """MNIST-family IDX files in a directory (`idx.load`'s splits), in memory.

  Training batches are randomly flipped images, no crops or colour changes:
  the images are small, centred objects and grey (the colour augmentation of
  the other sources would make them coloured).
  """

  prefix = IDX_PREFIX

  def check(self):
    load_idx(self.directory, with_labels=False)

  def train_batches(self, *, image_size, layout, seed, start_step,
                    colour_augmentation, decode_crop_only):
    del colour_augmentation  # Grey images stay grey.
    del decode_crop_only  # Decoded once, into memory.
    images = load_idx(self.directory, with_labels=False).train_images
    pixels = tf.constant(idx_stored_images(images, image_size))
    num_images = len(images)

    def batch_for_step(step):
      # As for the other in-memory sources: rows of one global draw.
      uniforms = tf.random.stateless_uniform(
          [layout.global_batch_size, 2],
          seed=tf.stack([tf.constant(seed, tf.int64), step]))
      rows = layout.local_rows
      image_index = tf.minimum(
          tf.cast(uniforms[rows, 0] * num_images, tf.int32), num_images - 1)
      chosen = tf.gather(pixels, image_index)
      flip = uniforms[rows, 1] < 0.5
      chosen = tf.where(flip[:, None, None], tf.reverse(chosen, axis=[2]),
                        chosen)
      return {"image": tf.repeat(
          tf.cast(chosen, tf.float32)[..., None] / 255.0, 3, axis=-1)}

    return tf.data.Dataset.counter(start_step).map(
        batch_for_step, num_parallel_calls=tf.data.AUTOTUNE)

  def eval_examples(self, *, image_size, layout, max_examples):
    images = load_idx(self.directory, with_labels=False).eval_images
    images = images[:max_examples]
    share = layout.interleaved_share(len(images))
    examples = tf.data.Dataset.from_tensor_slices({
        "image": idx.to_model_images(images[share], image_size,
                                     idx.default_fit(images, image_size)),
        "index": share.astype(np.int32)})
    return examples, layout.largest_share(len(images))

  def labeled_split(self, split, *, image_size, max_examples):
    raise DatasetError(f"{self.dataset!r}: IDX datasets are read whole into "
                       "memory; use load_labeled_arrays.")

  def labeled_arrays(self, *, image_size, max_examples):
    data = load_idx(self.directory, with_labels=True)
    prepare = functools.partial(
        idx.to_model_images, image_size=image_size,
        fit=idx.default_fit(data.train_images, image_size))
    return LabeledArrays(
        data.train_images[:max_examples], data.train_labels[:max_examples],
        data.eval_images[:max_examples], data.eval_labels[:max_examples],
        data.num_classes, data.eval_split, prepare)


@functools.lru_cache(maxsize=4)
def load_coco(directory: str, split: str) -> coco.CocoSplit:
  """`coco.load_split`, cached: a run reads each annotation file once.

  Raises:
    DatasetError: a missing or malformed file (`coco.CocoFormatError`'s
      message names the file and the entry).
  """
  try:
    return coco.load_split(directory, split)
  except coco.CocoFormatError as e:
    raise DatasetError(str(e)) from e


class CocoSource(DirectorySource):
  """A COCO-format detection set in COCO's layout (`finola_jax.data.coco`):
  ``DIR/annotations/instances_{split}.json`` and the images in
  ``DIR/{split}/``.

  Detection splits serve the images with their boxes. Plain image batches
  serve the same images without boxes, so that a backbone can be pre-trained
  or a reconstruction scored on the images it will detect in: training
  draws files with replacement and decodes them as it goes
  (`drawn_file_batches`: COCO's 118k images do not fit in memory),
  evaluation is the evaluation split's centre squares in its file order.
  `check` reads and checks both annotation files (`load_coco`).
  """

  prefix = COCO_PREFIX

  def __init__(self, directory: str, train_split: str = coco.TRAIN_SPLIT,
               eval_split: str = coco.EVAL_SPLIT):
    super().__init__(directory)
    self.split_names = dict(zip(SPLITS, (train_split, eval_split)))

  def with_splits(self, train, evaluation):
    return CocoSource(self.directory, train or coco.TRAIN_SPLIT,
                      evaluation or coco.EVAL_SPLIT)

  def annotations(self, split: str) -> coco.CocoSplit:
    """The checked annotations of `split` ("train" or "validation")."""
    if split not in SPLITS:
      raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")
    return load_coco(self.directory, self.split_names[split])

  def check(self):
    train, evaluation = (self.annotations(split) for split in SPLITS)
    if train.category_ids != evaluation.category_ids:
      raise DatasetError(
          f"{train.annotation_file} and {evaluation.annotation_file} have "
          f"different categories ({list(train.category_ids)} and "
          f"{list(evaluation.category_ids)}).")

  def detection_split(self, split, *, image_size, max_boxes):
    try:
      return coco.DetectionSplit.create(self.annotations(split), image_size,
                                        max_boxes)
    except ValueError as e:  # Too many boxes for max_boxes.
      raise DatasetError(str(e)) from e

  def train_batches(self, *, image_size, layout, seed, start_step,
                    colour_augmentation, decode_crop_only):
    del decode_crop_only  # Files of several formats, decoded whole.
    return drawn_file_batches(
        list(self.annotations(SPLITS[0]).paths), image_size=image_size,
        layout=layout, seed=seed, start_step=start_step,
        colour_augmentation=colour_augmentation)

  def eval_examples(self, *, image_size, layout, max_examples):
    paths = self.annotations(VALIDATION).paths[:max_examples]
    return file_examples(list(paths), layout, image_size)


def known_tfds_builder(name: str,
                       data_dir: str | None) -> tfds.core.DatasetBuilder:
  """The TFDS builder for `name` ("name" or "name:version"), not prepared.

  Raises:
    DatasetError: TFDS knows no dataset `name`.
  """
  try:
    return tfds.builder(name, data_dir=data_dir)
  except tfds.core.DatasetNotFoundError as e:
    raise DatasetError(
        f"Unknown dataset {name!r}: it is not {EMBEDDED!r}, not "
        f"'{FOLDER_PREFIX}<dir>' or an existing directory, not "
        f"'{IDX_PREFIX}<dir>' or '{COCO_PREFIX}<dir>', and not a TFDS dataset "
        "name.") from e


def tfds_builder(name: str, data_dir: str | None) -> tfds.core.DatasetBuilder:
  """The prepared TFDS builder for `name` ("name" or "name:version").

  Prepares the dataset if needed, as `tfds.load` does: datasets with a manual
  download (ImageNet) are built from `<data_dir>/downloads/manual/`.

  Raises:
    DatasetError: TFDS knows no dataset `name`.
  """
  builder = known_tfds_builder(name, data_dir)
  builder.download_and_prepare()
  return builder


def validation_split_name(builder: tfds.core.DatasetBuilder) -> str:
  """"validation" if the dataset has it, else "test"."""
  for split in ("validation", "test"):
    if split in builder.info.splits:
      return split
  raise DatasetError(
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


def deterministic_options() -> tf.data.Options:
  """tf.data options that keep the order of elements (the default may not)."""
  options = tf.data.Options()
  options.deterministic = True
  return options


class TfdsSource(Source):
  """A TFDS dataset, read from `data_dir`: training on this process's shard
  of "train" (seeded shuffle, repeated, decoded per example), validation on
  "validation" (else "test"), or the splits named by `with_splits`; labeled
  splits need "image" and a class "label"; detection splits need a prepared
  dataset with COCO's features (`DETECTION_FEATURES`, `OBJECT_FEATURES`:
  ``coco/2017``)."""

  def __init__(self, name: str, data_dir: str | None = None,
               train_split: str | None = None,
               eval_split: str | None = None):
    self.name_and_version = name
    self.data_dir = data_dir
    self.train_split = train_split
    self.eval_split = eval_split

  def with_splits(self, train, evaluation):
    return TfdsSource(self.name_and_version, self.data_dir, train, evaluation)

  def split_name(self, builder: tfds.core.DatasetBuilder, split: str) -> str:
    """The TFDS split that serves `split` ("train" or "validation").

    Raises:
      DatasetError: a split named by `with_splits` is not in the dataset.
    """
    if split not in SPLITS:
      raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")
    if split == VALIDATION:
      name = self.eval_split or validation_split_name(builder)
    else:
      name = self.train_split or split
    if name not in builder.info.splits:
      raise DatasetError(
          f"TFDS dataset {self.dataset!r} has no split {name!r} (splits: "
          f"{sorted(builder.info.splits)}).")
    return name

  @property
  def dataset(self) -> str:
    return self.name_and_version

  def check(self):
    known_tfds_builder(self.name_and_version, self.data_dir)

  def builder(self) -> tfds.core.DatasetBuilder:
    return tfds_builder(self.name_and_version, self.data_dir)

  def train_batches(self, *, image_size, layout, seed, start_step,
                    colour_augmentation, decode_crop_only):
    builder = self.builder()
    split = tfds.split_for_jax_process(
        self.split_name(builder, SPLITS[0]),
        process_index=layout.process_index,
        process_count=layout.process_count, drop_remainder=True)
    read_config = tfds.ReadConfig(shuffle_seed=seed,
                                  options=deterministic_options())
    encoded = read_tfds_split(
        builder, split, shuffle_files=True,
        read_config=read_config).map(lambda ex: ex["image"])
    batch_size = layout.local_batch_size
    # Skipping happens before decoding: resuming reads, but does not decode,
    # the skipped records.
    return streaming_train_batches(
        encoded.shuffle(_TFDS_SHUFFLE_BUFFER, seed=seed).repeat()
        .skip(start_step * batch_size),
        image_size=image_size, batch_size=batch_size,
        batch_seed=tf.constant([seed, layout.process_index], tf.int64),
        start_step=start_step, colour_augmentation=colour_augmentation,
        decode_crop_only=decode_crop_only)

  def eval_examples(self, *, image_size, layout, max_examples):
    builder = self.builder()
    split = limit_split(builder, self.split_name(builder, VALIDATION),
                        max_examples)
    shards = [tfds.split_for_jax_process(split, process_index=p,
                                         process_count=layout.process_count)
              for p in range(layout.process_count)]
    sizes = [builder.info.splits[shard].num_examples for shard in shards]
    # Shards are consecutive ranges of the split, in process order.
    first = sum(sizes[:layout.process_index])
    examples = read_tfds_split(
        builder, shards[layout.process_index], shuffle_files=False).enumerate(
            start=first).map(
                lambda index, example: {
                    "image": preprocessing.center_crop_resize(
                        decode_image(example["image"]), image_size),
                    "index": tf.cast(index, tf.int32)},
                num_parallel_calls=tf.data.AUTOTUNE)
    return examples, max(sizes)

  def labeled_split(self, split, *, image_size, max_examples):
    builder = self.builder()
    features = builder.info.features
    if ("image" not in features or "label" not in features
        or not isinstance(features["label"], tfds.features.ClassLabel)):
      raise DatasetError(
          f"TFDS dataset {self.dataset!r} is not an image classification "
          "dataset: it needs an 'image' feature and a class 'label' feature.")
    split = limit_split(builder, self.split_name(builder, split), max_examples)

    def dataset_fn():
      examples = read_tfds_split(builder, split, shuffle_files=False)
      return examples.map(
          lambda ex: {
              "image": preprocessing.center_crop_resize(
                  decode_image(ex["image"]), image_size),
              "label": tf.cast(ex["label"], tf.int32)},
          num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    return LabeledSplit(num_classes=features["label"].num_classes,
                        num_examples=builder.info.splits[split].num_examples,
                        dataset_fn=dataset_fn)

  def detection_split(self, split, *, image_size, max_boxes):
    builder = known_tfds_builder(self.name_and_version, self.data_dir)
    features = builder.info.features
    missing = [key for key in DETECTION_FEATURES if key not in features]
    if "objects" in features:
      missing += [f"objects/{key}" for key in OBJECT_FEATURES
                  if key not in features["objects"].feature]
    if missing or not isinstance(features["objects"]["label"],
                                 tfds.features.ClassLabel):
      raise DatasetError(
          f"TFDS dataset {self.dataset!r} is not a detection set with COCO's "
          f"features: {', '.join(DETECTION_FEATURES)} and objects with "
          f"{', '.join(OBJECT_FEATURES)} (a class label); it has no "
          f"{', '.join(missing) or 'class label'}.")
    check_prepared(builder, self.name_and_version, self.data_dir)
    try:
      data = TfdsDetectionSplit.create(builder, self.split_name(builder, split),
                                       image_size, max_boxes)
      if split == VALIDATION:
        # Read now, before a run writes anything: COCOeval's ground truth,
        # and the box budget checked as for 'coco:DIR'.
        data.annotations  # pylint: disable=pointless-statement
    except ValueError as e:  # Too many boxes for max_boxes.
      raise DatasetError(str(e)) from e
    return data


# The TFDS features a detection split reads, as TFDS's coco/2014 and
# coco/2017 have them: the example's, and those of each of its "objects".
DETECTION_FEATURES = ("image", "image/id", "objects")
OBJECT_FEATURES = ("bbox", "label", "is_crowd", "area")


def check_prepared(builder: tfds.core.DatasetBuilder, name: str,
                   data_dir: str | None) -> None:
  """Raises DatasetError, saying how to prepare it, unless TFDS dataset
  `name` (its `builder`) is prepared under `data_dir`: it is not downloaded
  at run time."""
  if not builder.is_prepared():
    root = data_dir or "~/tensorflow_datasets"
    raise DatasetError(
        f"TFDS dataset {name!r} is not prepared under data_dir={data_dir!r} "
        f"(no {builder.data_dir}), and nothing is downloaded at run time. "
        f"Prepare it on a machine that can download it, `tfds build "
        f"{name.split(':')[0]} --data_dir={root}` (COCO 2017: about 25 GB), "
        "and set config.data_dir to the directory it is in.")


def pixel_boxes(bbox: np.ndarray, height: int, width: int) -> np.ndarray:
  """TFDS's normalized float ``[k, 4]`` ``(ymin, xmin, ymax, xmax)`` →
  float32 ``[k, 4]`` ``(x0, y0, x1, y1)`` in the image's pixels."""
  return (np.asarray(bbox, np.float64).reshape(-1, 4)[:, [1, 0, 3, 2]] *
          [width, height, width, height]).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class TfdsAnnotations:
  """A TFDS detection split's annotations, in its order (rows).

  Attributes:
    image_ids: int64 ``[N]``.
    sizes: int32 ``[N, 2]`` (height, width).
    ground_truth: COCOeval's COCO-format dict: every object (crowds with
      ``iscrowd`` 1), boxes ``[x, y, width, height]`` in the image's pixels,
      TFDS's ``area`` (COCO's, of the segmentation mask, which TFDS stores
      as an integer), labels as category ids.
  """
  image_ids: np.ndarray
  sizes: np.ndarray
  ground_truth: dict


def _image_shape(encoded: tf.Tensor) -> tf.Tensor:
  """int32 [2] (height, width) of encoded image bytes; a JPEG is not decoded."""
  return tf.cond(tf.io.is_jpeg(encoded),
                 lambda: tf.image.extract_jpeg_shape(encoded)[:2],
                 lambda: tf.shape(decode_image(encoded))[:2])


@dataclasses.dataclass(frozen=True)
class TfdsDetectionSplit(coco.DetectionData):
  """A split of a prepared TFDS detection set with COCO's features
  (``coco/2017``), streamed, as `coco.DetectionSplit` serves COCO's layout.

  Examples are `coco.detection_example`s, so letterbox, flip and padding
  are those of ``coco:DIR``; crowd objects are not training targets. Labels
  are TFDS's class labels, which for COCO are the positions of the
  categories sorted by id (TFDS names them in the annotation file's order):
  the same labels as ``coco:DIR`` gives, so a head serves both. TFDS keeps no
  COCO category ids, so the labels are the ground truth's category ids.

  Images are decoded by tf.data as the batches are consumed (COCO's 118k
  training images never sit in memory). Unlike ``coco:DIR``, training reads
  this process's shard of the split in a seeded shuffle (as `TfdsSource`
  does for image batches), with flips drawn from (seed, process, step):
  batches are a function of (seed, step) for a given process layout, and
  resuming at step t skips t batches of records without decoding them. The
  training split's annotations are not read up front (a pass over every
  record), so a training image with more than ``max_boxes`` boxes keeps its
  first ``max_boxes``; the evaluation split's are (`annotations`).

  Attributes:
    builder: the prepared TFDS builder.
    split: its split's name.
    image_size: S.
    max_boxes: the padded number of boxes per image.
  """
  builder: tfds.core.DatasetBuilder
  split: str
  image_size: int
  max_boxes: int

  @classmethod
  def create(cls, builder: tfds.core.DatasetBuilder, split: str,
             image_size: int, max_boxes: int) -> TfdsDetectionSplit:
    coco.check_budget(image_size, max_boxes)
    return cls(builder, split, image_size, max_boxes)

  @property
  def name(self) -> str:
    return self.split

  @property
  def category_names(self) -> tuple[str, ...]:
    return tuple(self.builder.info.features["objects"]["label"].names)

  @property
  def category_ids(self) -> tuple[int, ...]:
    return tuple(range(len(self.category_names)))

  @functools.cached_property
  def annotations(self) -> TfdsAnnotations:
    """One pass over the split's records, images not decoded (JPEG shapes
    are read from their headers), kept in memory: COCO's 5000 validation
    images make a few MB. Built in memory rather than written as a JSON
    file: a source has no workdir to write to, and a copy kept beside the
    dataset could fall out of step with it.

    Raises:
      ValueError: an image has more non-crowd boxes than ``max_boxes``.
    """

    def summary(example):
      objects = example["objects"]
      return {"image_id": example["image/id"],
              "size": _image_shape(example["image"]),
              "bbox": objects["bbox"], "label": objects["label"],
              "is_crowd": objects["is_crowd"], "area": objects["area"]}

    records = self._records(self.split).map(
        summary, num_parallel_calls=tf.data.AUTOTUNE)
    image_ids, sizes, images, objects = [], [], [], []
    for record in records.as_numpy_iterator():
      image_id, (height, width) = int(record["image_id"]), record["size"]
      boxes = pixel_boxes(record["bbox"], height, width)
      count = int(np.sum(~record["is_crowd"]))
      if count > self.max_boxes:
        raise ValueError(
            f"TFDS {self.builder.info.full_name} '{self.split}': image id "
            f"{image_id} has {count} boxes, more than max_boxes="
            f"{self.max_boxes}; raise max_boxes.")
      image_ids.append(image_id)
      sizes.append((height, width))
      images.append({"id": image_id, "height": int(height),
                     "width": int(width)})
      for (x0, y0, x1, y1), label, crowd, area in zip(
          boxes.tolist(), record["label"], record["is_crowd"],
          record["area"]):
        objects.append({"id": len(objects) + 1, "image_id": image_id,
                        "category_id": int(label),
                        "bbox": [x0, y0, x1 - x0, y1 - y0],
                        "area": float(area), "iscrowd": int(crowd)})
    categories = [{"id": i, "name": n}
                  for i, n in zip(self.category_ids, self.category_names)]
    return TfdsAnnotations(
        image_ids=np.array(image_ids, np.int64),
        sizes=np.array(sizes, np.int32).reshape(-1, 2),
        ground_truth={"images": images, "annotations": objects,
                      "categories": categories})

  @property
  def image_ids(self) -> np.ndarray:
    return self.annotations.image_ids

  @property
  def sizes(self) -> np.ndarray:
    return self.annotations.sizes

  def ground_truth(self):
    return self.annotations.ground_truth

  def _records(self, split, shuffle_seed: int | None = None
               ) -> tf.data.Dataset:
    """The records of `split`, images encoded: in file order, or with the
    files shuffled by `shuffle_seed`."""
    return read_tfds_split(
        self.builder, split, shuffle_files=shuffle_seed is not None,
        read_config=tfds.ReadConfig(shuffle_seed=shuffle_seed,
                                    options=deterministic_options()))

  def _decoded(self, records: tf.data.Dataset) -> Iterator[dict]:
    """numpy records {"image": uint8 [H, W, 3], "image_id", "bbox",
    "label", "is_crowd"}, decoded in parallel, in order."""
    return records.map(
        lambda example: {
            "image": decode_image(example["image"]),
            "image_id": example["image/id"],
            "bbox": example["objects"]["bbox"],
            "label": example["objects"]["label"],
            "is_crowd": example["objects"]["is_crowd"]},
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(
            tf.data.AUTOTUNE).as_numpy_iterator()

  def _example(self, record, flip: bool) -> dict[str, np.ndarray]:
    height, width = record["image"].shape[:2]
    targets = ~record["is_crowd"]
    return coco.detection_example(
        record["image"],
        pixel_boxes(record["bbox"][targets], height, width)[:self.max_boxes],
        record["label"][targets][:self.max_boxes], int(record["image_id"]),
        image_size=self.image_size, max_boxes=self.max_boxes, flip=flip)

  def train_batches(self, start_step, *, seed, layout):
    split = tfds.split_for_jax_process(
        self.split, process_index=layout.process_index,
        process_count=layout.process_count, drop_remainder=True)
    batch_size = layout.local_batch_size
    # Skipping happens before decoding: resuming reads, but does not decode,
    # the skipped records.
    records = self._decoded(
        self._records(split, shuffle_seed=seed)
        .shuffle(_TFDS_SHUFFLE_BUFFER, seed=seed).repeat()
        .skip(start_step * batch_size))
    step = start_step
    while True:
      flips = np.random.default_rng(
          [seed, layout.process_index, step]).random(batch_size) < 0.5
      yield coco.to_devices([self._example(next(records), bool(flip))
                             for flip in flips], layout)
      step += 1

  def row_examples(self, rows):
    if not len(rows):
      return
    wanted = tf.constant(rows, tf.int64)
    records = self._records(self.split).take(int(rows[-1]) + 1).enumerate(
    ).filter(lambda row, _: tf.reduce_any(tf.equal(row, wanted))).map(
        lambda _, example: example)
    for record in self._decoded(records):
      yield self._example(record, flip=False)
