# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Image input pipelines: tf.data in, numpy out.

TensorFlow is used here only to read and augment images; no model code touches
it. Batches come out as numpy arrays laid out for `jax.pmap`:
``[local_device_count, per_device_batch, S, S, 3]``, float32 in [0, 1].

Dataset names understood by `create_train_iterator` and `create_eval_iterator`:

* ``"embedded"`` (`EMBEDDED`): photographs bundled with scikit-image, needs no
  network and no files. A handful of photos, so it suits smoke tests and small
  runs, not representation learning at scale.
* ``"folder:/some/dir"`` or the path of an existing directory: every image file
  under it (recursively), decoded once into memory.
* anything else: a TFDS dataset name, optionally versioned
  (``"imagenet2012"``, ``"cifar10:3.0.2"``), read from ``data_dir``.

Determinism: a batch is a pure function of (seed, step). For the in-memory
sources (embedded, folder) example k of the global batch at step t is drawn from
row k of a stateless random draw seeded by (seed, t), and process p builds only
rows [p * local_batch, (p + 1) * local_batch): the global batch is the same for
every process/device layout, and resuming at step t costs nothing. For TFDS each
process reads its own shard with seeded shuffling; resuming at step t skips
t * local_batch records before decoding (see `create_train_iterator`).
"""

import functools
import itertools
import math
import os
from typing import Iterator, NamedTuple, Sequence

import jax
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

EMBEDDED = "embedded"
FOLDER_PREFIX = "folder:"

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

# Random resized crop: the crop covers this fraction of the source image's area
# and has a width/height ratio in this range (Inception-style).
CROP_AREA_RANGE = (0.08, 1.0)
CROP_ASPECT_RATIO_RANGE = (3 / 4, 4 / 3)

# Colour augmentation: the RGB channels in a random order, each then scaled by
# a gain from this range (clipped to [0, 1]). Seven of the 13 embedded training
# photographs are greyscale; without it a model learns their palette and
# reconstructs unseen colours worse than their mean (see the README).
COLOUR_GAIN_RANGE = (0.7, 1.3)
_CHANNEL_PERMUTATIONS = tuple(itertools.permutations(range(3)))

# Training images are resized once (antialiased) so their shorter side is this
# multiple of the output size; a batch is then resampled by one
# `crop_and_resize` call. In-memory sources (a few photographs up to a few
# thousand files) are kept large enough that even the smallest crop (~1
# output size of stored pixels) is hardly upsampled: small crops are what makes
# a handful of photographs many distinct training images. TFDS images are
# decoded per example, and at 2x the crops span ~0.5-2.7 output sizes, so a
# bilinear sample per output pixel neither blurs nor aliases much.
_IN_MEMORY_STORED_SIZE_FACTOR = 4
_TFDS_STORED_SIZE_FACTOR = 2

# Encoded (not decoded) TFDS records shuffled together: ~1 GB for ImageNet.
_TFDS_SHUFFLE_BUFFER = 10_000

# A folder source holds out the files at sorted positions 9, 19, 29, ...
_FOLDER_HOLDOUT_EVERY = 10


class BatchLayout(NamedTuple):
  """How a global batch is split over processes and their local devices."""

  process_index: int
  process_count: int
  local_device_count: int
  per_device_batch_size: int

  @property
  def local_batch_size(self) -> int:
    return self.local_device_count * self.per_device_batch_size


def batch_layout(global_batch_size: int,
                 process_index: int | None = None,
                 process_count: int | None = None,
                 local_device_count: int | None = None) -> BatchLayout:
  """Validates the batch split; unset counts come from the running JAX."""
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  if local_device_count is None:
    local_device_count = jax.local_device_count()
  if process_count < 1 or local_device_count < 1:
    raise ValueError(
        f"process_count ({process_count}) and local_device_count "
        f"({local_device_count}) must be >= 1.")
  if not 0 <= process_index < process_count:
    raise ValueError(
        f"process_index {process_index} is outside [0, {process_count}).")
  devices = process_count * local_device_count
  if global_batch_size < 1 or global_batch_size % devices:
    raise ValueError(
        f"global_batch_size {global_batch_size} must be a positive multiple of "
        f"process_count * local_device_count = {process_count} * "
        f"{local_device_count} = {devices}.")
  return BatchLayout(process_index, process_count, local_device_count,
                     global_batch_size // devices)


def check_image_size(image_size: int) -> None:
  """Raises ValueError unless image_size >= 1."""
  if image_size < 1:
    raise ValueError(f"image_size must be >= 1, got {image_size}.")


def check_max_examples(max_examples: int | None) -> None:
  """Raises ValueError unless max_examples is None or >= 1."""
  if max_examples is not None and max_examples < 1:
    raise ValueError(f"max_examples must be >= 1 or None, got {max_examples}.")


def _hide_gpus_from_tensorflow() -> None:
  # TensorFlow would otherwise grab GPU memory that JAX needs.
  try:
    tf.config.experimental.set_visible_devices([], "GPU")
  except RuntimeError:  # TF already initialised its devices; too late.
    pass


_hide_gpus_from_tensorflow()


# ------------------------------------------------------------------ sources ---


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
  return tf.io.decode_image(
      tf.io.read_file(path), channels=3, expand_animations=False).numpy()


@functools.cache
def _embedded_photo(name: str) -> np.ndarray:
  """A bundled scikit-image photograph as uint8 [H, W, 3]."""
  # Imported here: importing scikit-image is slow and only this source needs it.
  import skimage.data  # pylint: disable=g-import-not-at-top

  photo = getattr(skimage.data, name)()
  if isinstance(photo, tuple):  # stereo_motorcycle: (left, right, disparity).
    photo = photo[0]
  if photo.ndim == 2:
    photo = np.repeat(photo[..., None], 3, axis=-1)
  return photo[..., :3]


def _folder_photos(directory: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
  """(train, validation) images of a folder source, uint8 [H, W, 3] each."""
  paths = list_image_files(directory, recursive=True)
  if len(paths) < 2:
    raise ValueError(
        f"{directory!r} holds one image; a folder source needs at least two "
        "(one is held out for validation).")
  held_out = set(holdout_positions(len(paths), _FOLDER_HOLDOUT_EVERY))
  train = [decode_image_file(p) for i, p in enumerate(paths) if i not in held_out]
  validation = [decode_image_file(paths[i]) for i in sorted(held_out)]
  return train, validation


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


# ---------------------------------------------------------------- resampling ---


def decode_tfds_image(encoded: tf.Tensor) -> tf.Tensor:
  """Encoded image bytes -> uint8 [H, W, 3]."""
  return tf.io.decode_image(encoded, channels=3, expand_animations=False)


def _resize(image: tf.Tensor, height, width) -> tf.Tensor:
  """Antialiased bilinear resize: [H, W, 3] (any dtype, 0..255) -> float32."""
  return tf.image.resize(
      tf.cast(image, tf.float32), tf.stack([height, width]),
      method="bilinear", antialias=True)


def _crop_resize(image: tf.Tensor, top, left, size: int | tf.Tensor,
                 image_size: int) -> tf.Tensor:
  """A square crop of `image` (0..255) resized: float32 [S, S, 3] in [0, 1]."""
  crop = image[top:top + size, left:left + size]
  return _resize(crop, image_size, image_size) / 255.0


def center_crop_resize(image: tf.Tensor, image_size: int) -> tf.Tensor:
  """The largest centred square of uint8 [H, W, 3], resized: float32 [S, S, 3]."""
  height, width = tf.shape(image)[0], tf.shape(image)[1]
  size = tf.minimum(height, width)
  return _crop_resize(image, (height - size) // 2, (width - size) // 2, size,
                      image_size)


def _centre_and_quadrant_crops(photo: np.ndarray, image_size: int) -> np.ndarray:
  """Five fixed views of a photo: its centre square and that square's quadrants.

  Returns float32 [5, S, S, 3]. The embedded validation set has only three
  photographs; viewing each at two scales gives 15 examples, the same on every
  call.
  """
  height, width = photo.shape[:2]
  size = min(height, width)
  top, left = (height - size) // 2, (width - size) // 2
  half = size // 2
  boxes = [(top, left, size)] + [(top + dy, left + dx, half)
                                 for dy in (0, half) for dx in (0, half)]
  return np.stack([_crop_resize(photo, t, l, s, image_size).numpy()
                   for t, l, s in boxes])


def _store_for_training(image: tf.Tensor, image_size: int,
                        factor: int) -> tf.Tensor:
  """Resizes so the shorter side is `factor * S`: float32 [h, w, 3]."""
  height = tf.cast(tf.shape(image)[0], tf.float32)
  width = tf.cast(tf.shape(image)[1], tf.float32)
  scale = factor * image_size / tf.minimum(height, width)
  stored_height = tf.maximum(1, tf.cast(tf.round(height * scale), tf.int32))
  stored_width = tf.maximum(1, tf.cast(tf.round(width * scale), tf.int32))
  return _resize(image, stored_height, stored_width)


def _sample_crop_boxes(heights: tf.Tensor, widths: tf.Tensor,
                       uniforms: tf.Tensor) -> tuple[tf.Tensor, ...]:
  """Random resized crop boxes in pixels.

  Args:
    heights: float32 [B], source image heights.
    widths: float32 [B], source image widths.
    uniforms: float32 [B, 4], independent U[0, 1) draws.

  Returns:
    (top, left, crop_height, crop_width), float32 [B] each. Area fraction and
    aspect ratio (log-uniform) follow `CROP_AREA_RANGE` and
    `CROP_ASPECT_RATIO_RANGE`; a side longer than the image is clipped to it
    (rather than resampled) so every draw gives a box.
  """
  low_area, high_area = CROP_AREA_RANGE
  area = heights * widths * (low_area + (high_area - low_area) * uniforms[:, 0])
  log_low, log_high = (math.log(r) for r in CROP_ASPECT_RATIO_RANGE)
  aspect_ratio = tf.exp(log_low + (log_high - log_low) * uniforms[:, 1])
  crop_width = tf.minimum(tf.sqrt(area * aspect_ratio), widths)
  crop_height = tf.minimum(tf.sqrt(area / aspect_ratio), heights)
  top = (heights - crop_height) * uniforms[:, 2]
  left = (widths - crop_width) * uniforms[:, 3]
  return top, left, crop_height, crop_width


def _sample_positions(start, length, limit, image_size: int):
  """First and last of S pixel-centre sample positions across [start, start+length).

  Pixel i covers [i, i + 1) and has its centre at index coordinate i; output
  pixel j samples at start + (j + 0.5) * length / S - 0.5. Positions are kept
  inside [0, limit - 1] so no sample falls into padding.
  """
  step = length / image_size
  first = start + 0.5 * step - 0.5
  last = start + length - 0.5 * step - 0.5
  return (tf.clip_by_value(first, 0.0, limit - 1.0),
          tf.clip_by_value(last, 0.0, limit - 1.0))


class _StoredImages(NamedTuple):
  """Training images padded into one tensor, so a batch is cropped by one op.

  Each image is stored (see `_store_for_training`) in the top-left corner of
  its canvas.
  """

  pixels: tf.Tensor  # [N, H, W, 3], 0..255; image i fills [:heights[i], :widths[i]].
  heights: tf.Tensor  # float32 [N]
  widths: tf.Tensor  # float32 [N]


def _random_crop_boxes(stored: _StoredImages, image_index: tf.Tensor,
                       uniforms: tf.Tensor, image_size: int) -> tf.Tensor:
  """Random resized, randomly flipped crop boxes for `tf.image.crop_and_resize`.

  Args:
    stored: the images to crop.
    image_index: int32 [B], which stored image each crop comes from.
    uniforms: float32 [B, 5], U[0, 1) draws: 4 for the box, 1 for the flip.
    image_size: S.

  Returns:
    float32 [B, 4] normalised (y1, x1, y2, x2) boxes; x1 > x2 for a flip.
  """
  heights = tf.gather(stored.heights, image_index)
  widths = tf.gather(stored.widths, image_index)
  top, left, crop_height, crop_width = _sample_crop_boxes(
      heights, widths, uniforms[:, :4])
  y_first, y_last = _sample_positions(top, crop_height, heights, image_size)
  x_first, x_last = _sample_positions(left, crop_width, widths, image_size)
  # Swapping the x ends makes crop_and_resize sample right to left: a flip.
  flip = uniforms[:, 4] < 0.5
  x_first, x_last = (tf.where(flip, x_last, x_first),
                     tf.where(flip, x_first, x_last))
  # crop_and_resize maps normalised coordinate c to index c * (size - 1).
  canvas_height = tf.cast(tf.shape(stored.pixels)[1] - 1, tf.float32)
  canvas_width = tf.cast(tf.shape(stored.pixels)[2] - 1, tf.float32)
  return tf.stack([y_first / canvas_height, x_first / canvas_width,
                   y_last / canvas_height, x_last / canvas_width], axis=1)


def _crops(stored: _StoredImages, boxes: tf.Tensor, image_index: tf.Tensor,
           image_size: int) -> tf.Tensor:
  """Bilinear crops of stored images: float32 [B, S, S, 3] in [0, 1]."""
  return tf.image.crop_and_resize(stored.pixels, boxes, image_index,
                                  [image_size, image_size]) / 255.0


def _augment_colour(images: tf.Tensor, uniforms: tf.Tensor) -> tf.Tensor:
  """Permutes each image's channels and scales them (`COLOUR_GAIN_RANGE`).

  Args:
    images: float32 [B, S, S, 3] in [0, 1].
    uniforms: float32 [B, 4], U[0, 1) draws: 1 for the permutation, 3 gains.

  Returns:
    float32 [B, S, S, 3] in [0, 1].
  """
  count = len(_CHANNEL_PERMUTATIONS)
  choice = tf.minimum(tf.cast(uniforms[:, 0] * count, tf.int32), count - 1)
  permutation = tf.gather(tf.constant(_CHANNEL_PERMUTATIONS), choice)
  images = tf.gather(images, permutation, axis=3, batch_dims=1)
  low, high = COLOUR_GAIN_RANGE
  gains = low + (high - low) * uniforms[:, 1:]
  return tf.clip_by_value(images * gains[:, None, None, :], 0.0, 1.0)


def _stack_for_training(images: Sequence[np.ndarray],
                        image_size: int) -> _StoredImages:
  """Resizes uint8 [H_i, W_i, 3] images for training and pads them together."""
  resized = [
      tf.saturate_cast(tf.round(_store_for_training(
          image, image_size, _IN_MEMORY_STORED_SIZE_FACTOR)), tf.uint8).numpy()
      for image in images]
  canvas_height = max(image.shape[0] for image in resized)
  canvas_width = max(image.shape[1] for image in resized)
  pixels = np.zeros((len(resized), canvas_height, canvas_width, 3), np.uint8)
  for i, image in enumerate(resized):
    pixels[i, :image.shape[0], :image.shape[1]] = image
  return _StoredImages(
      tf.constant(pixels),
      tf.constant([image.shape[0] for image in resized], tf.float32),
      tf.constant([image.shape[1] for image in resized], tf.float32))


@functools.cache
def _embedded_training_images(image_size: int) -> _StoredImages:
  # Cached: resizing the large photographs dominates creating an iterator.
  return _stack_for_training(
      [_embedded_photo(name) for name in EMBEDDED_TRAIN_PHOTOS], image_size)


def _to_device_layout(images: tf.Tensor, layout: BatchLayout) -> tf.Tensor:
  """[local_batch, ...] -> [local_device_count, per_device_batch, ...]."""
  return tf.reshape(images, tf.concat(
      [[layout.local_device_count, layout.per_device_batch_size],
       tf.shape(images)[1:]], axis=0))


def _deterministic_options() -> tf.data.Options:
  options = tf.data.Options()
  options.deterministic = True
  return options


# ----------------------------------------------------------------- training ---


def _in_memory_train_dataset(stored: _StoredImages, *, image_size: int,
                             layout: BatchLayout, seed: int, start_step: int,
                             colour_augmentation: bool) -> tf.data.Dataset:
  """Batches of random crops of stored images, a pure function of (seed, step)."""
  num_images = len(stored.pixels)
  global_batch_size = layout.local_batch_size * layout.process_count
  first_row = layout.process_index * layout.local_batch_size

  def batch_for_step(step):
    # Row k of this draw belongs to example k of the global batch: every
    # layout produces the same global batch, each process its own rows. Boxes
    # are computed for the whole global batch and sliced afterwards because
    # vectorised float ops can round differently with the tensor length.
    uniforms = tf.random.stateless_uniform(
        [global_batch_size, 10], seed=tf.stack([tf.constant(seed, tf.int64), step]))
    image_index = tf.minimum(
        tf.cast(uniforms[:, 0] * num_images, tf.int32), num_images - 1)
    boxes = _random_crop_boxes(stored, image_index, uniforms[:, 1:6], image_size)
    rows = slice(first_row, first_row + layout.local_batch_size)
    crops = _crops(stored, boxes[rows], image_index[rows], image_size)
    if colour_augmentation:
      crops = _augment_colour(crops, uniforms[rows, 6:])
    return {"image": _to_device_layout(crops, layout)}

  return tf.data.Dataset.counter(start_step).map(
      batch_for_step, num_parallel_calls=tf.data.AUTOTUNE)


def _tfds_train_dataset(name: str, *, data_dir: str | None, image_size: int,
                        layout: BatchLayout, seed: int, start_step: int,
                        colour_augmentation: bool) -> tf.data.Dataset:
  """Shuffled, repeated, augmented batches of this process's shard of "train"."""
  builder = tfds_builder(name, data_dir)
  split = tfds.split_for_jax_process(
      "train", process_index=layout.process_index,
      process_count=layout.process_count, drop_remainder=True)
  read_config = tfds.ReadConfig(shuffle_seed=seed,
                                options=_deterministic_options())
  encoded = read_tfds_split(builder, split, shuffle_files=True,
                            read_config=read_config).map(lambda ex: ex["image"])
  batch_size = layout.local_batch_size
  batch_seed = tf.constant([seed, layout.process_index], tf.int64)

  def decode_and_store(encoded_image):
    image = _store_for_training(decode_tfds_image(encoded_image), image_size,
                                _TFDS_STORED_SIZE_FACTOR)
    return image, tf.shape(image)[0], tf.shape(image)[1]

  def augment_batch(step, batch):
    pixels, heights, widths = batch
    stored = _StoredImages(pixels, tf.cast(heights, tf.float32),
                           tf.cast(widths, tf.float32))
    uniforms = tf.random.stateless_uniform(
        [batch_size, 9],
        seed=tf.random.experimental.stateless_fold_in(batch_seed, step))
    image_index = tf.range(batch_size)
    boxes = _random_crop_boxes(stored, image_index, uniforms[:, :5], image_size)
    crops = _crops(stored, boxes, image_index, image_size)
    if colour_augmentation:
      crops = _augment_colour(crops, uniforms[:, 5:])
    return {"image": _to_device_layout(crops, layout)}

  # Skipping happens before decoding: resuming reads, but does not decode,
  # the skipped records. Images are padded into one tensor per batch so the
  # batch is augmented by a few ops instead of a few per image.
  return (encoded.shuffle(_TFDS_SHUFFLE_BUFFER, seed=seed).repeat()
          .skip(start_step * batch_size)
          .map(decode_and_store, num_parallel_calls=tf.data.AUTOTUNE)
          .padded_batch(batch_size, drop_remainder=True)
          .enumerate(start=start_step)
          .map(augment_batch, num_parallel_calls=tf.data.AUTOTUNE))


def create_train_iterator(
    dataset: str, *, image_size: int, global_batch_size: int, seed: int,
    start_step: int = 0, data_dir: str | None = None,
    colour_augmentation: bool = True, process_index: int | None = None,
    process_count: int | None = None,
    local_device_count: int | None = None) -> Iterator[dict[str, np.ndarray]]:
  """Endless augmented training batches for steps start_step, start_step+1, ...

  Augmentation: random resized crop (area fraction `CROP_AREA_RANGE`, aspect
  ratio `CROP_ASPECT_RATIO_RANGE`), bilinear resampling from images stored at
  a few times the output size (antialiased), random horizontal flip and, if
  `colour_augmentation`, a random channel order and per-channel gains
  (`COLOUR_GAIN_RANGE`).

  In-memory sources (embedded, folder) draw images with replacement; their
  global batch at a step is the same for any process/device layout. A folder
  is held in memory at 4 times the output size (shorter side), padded to the
  largest image: keep it to a few thousand images and use TFDS beyond. TFDS
  sources shuffle (seeded) this process's shard of "train" and repeat it.

  Args:
    dataset: `EMBEDDED`, "folder:DIR" / an existing DIR, or a TFDS name.
    image_size: S, the side of the square output images.
    global_batch_size: examples per step over all processes.
    seed: the batch at a step is a function of (seed, step) only.
    start_step: first step to produce. In-memory sources start there for free;
      TFDS sources read (without decoding) start_step * local_batch records.
    data_dir: TFDS data directory (TFDS default if None).
    colour_augmentation: whether to permute and scale colour channels.
    process_index: this process; default `jax.process_index()`.
    process_count: default `jax.process_count()`.
    local_device_count: default `jax.local_device_count()`.

  Yields:
    {"image": float32 [local_device_count, per_device, S, S, 3] in [0, 1]},
    per_device = global_batch_size // (process_count * local_device_count).
  """
  check_image_size(image_size)
  if start_step < 0:
    raise ValueError(f"start_step must be >= 0, got {start_step}.")
  layout = batch_layout(global_batch_size, process_index, process_count,
                        local_device_count)
  directory = folder_path(dataset)
  if dataset == EMBEDDED or directory is not None:
    if directory is None:
      stored = _embedded_training_images(image_size)
    else:
      stored = _stack_for_training(_folder_photos(directory)[0], image_size)
    batches = _in_memory_train_dataset(stored, image_size=image_size,
                                       layout=layout, seed=seed,
                                       start_step=start_step,
                                       colour_augmentation=colour_augmentation)
  else:
    batches = _tfds_train_dataset(dataset, data_dir=data_dir,
                                  image_size=image_size, layout=layout,
                                  seed=seed, start_step=start_step,
                                  colour_augmentation=colour_augmentation)
  batches = batches.prefetch(tf.data.AUTOTUNE)
  return batches.with_options(_deterministic_options()).as_numpy_iterator()


# --------------------------------------------------------------- evaluation ---


def _padded_eval_batches(images: tf.data.Dataset, max_share: int,
                         layout: BatchLayout,
                         image_size: int) -> tf.data.Dataset:
  """Batches this process's eval images, padding to the largest process share.

  Every process yields ceil(max_share / local_batch) batches (pmapped
  collectives need them in step); padding examples are zeros with mask 0.
  """
  num_batches = -(-max_share // layout.local_batch_size)
  padding = tf.data.Dataset.from_tensors({
      "image": tf.zeros([image_size, image_size, 3], tf.float32),
      "mask": tf.constant(0.0, tf.float32)}).repeat()
  examples = images.map(lambda image: {"image": image, "mask": tf.constant(1.0)})
  batches = (examples.concatenate(padding)
             .take(num_batches * layout.local_batch_size)
             .batch(layout.local_batch_size))
  return batches.map(
      lambda batch: {k: _to_device_layout(v, layout) for k, v in batch.items()})


def _in_memory_eval_images(directory: str | None,
                           image_size: int) -> np.ndarray:
  """Validation images: embedded if `directory` is None, else the folder's.

  Returns float32 [N, S, S, 3].
  """
  if directory is None:
    return np.concatenate([
        _centre_and_quadrant_crops(_embedded_photo(name), image_size)
        for name in EMBEDDED_VALIDATION_PHOTOS])
  _, validation = _folder_photos(directory)
  return np.stack([center_crop_resize(image, image_size).numpy()
                   for image in validation])


def create_eval_iterator(
    dataset: str, *, image_size: int, global_batch_size: int,
    data_dir: str | None = None, process_index: int | None = None,
    process_count: int | None = None, local_device_count: int | None = None,
    max_examples: int | None = None) -> Iterator[dict[str, np.ndarray]]:
  """One deterministic pass over the validation images.

  Validation images: for `EMBEDDED`, each held-out photograph's centre square
  and its four quadrants (15 images); for a folder, the held-out files; for
  TFDS, the "validation" split (else "test"). Each is centre-cropped to a
  square and resized, without randomness. Process p takes its own disjoint
  share (every process_count-th image from p for in-memory sources, its
  `tfds.split_for_jax_process` shard for TFDS).

  Args:
    dataset: as for `create_train_iterator`.
    image_size: S.
    global_batch_size: examples per step over all processes.
    data_dir: TFDS data directory.
    process_index: this process; default `jax.process_index()`.
    process_count: default `jax.process_count()`.
    local_device_count: default `jax.local_device_count()`.
    max_examples: use only the first this many validation images.

  Yields:
    {"image": float32 [local_device_count, per_device, S, S, 3],
     "mask": float32 [local_device_count, per_device]}: mask 1 for real images,
    0 for the zero padding that fills the last batch. All processes yield the
    same number of batches.
  """
  check_image_size(image_size)
  check_max_examples(max_examples)
  layout = batch_layout(global_batch_size, process_index, process_count,
                        local_device_count)
  directory = folder_path(dataset)
  if dataset == EMBEDDED or directory is not None:
    all_images = _in_memory_eval_images(directory, image_size)[:max_examples]
    images = tf.data.Dataset.from_tensor_slices(
        all_images[layout.process_index::layout.process_count])
    max_share = -(-len(all_images) // layout.process_count)
  else:
    builder = tfds_builder(dataset, data_dir)
    split = limit_split(builder, validation_split_name(builder), max_examples)
    shards = [tfds.split_for_jax_process(split, process_index=p,
                                         process_count=layout.process_count)
              for p in range(layout.process_count)]
    max_share = max(builder.info.splits[s].num_examples for s in shards)
    images = read_tfds_split(builder, shards[layout.process_index],
                             shuffle_files=False).map(
        lambda ex: center_crop_resize(decode_tfds_image(ex["image"]),
                                      image_size),
        num_parallel_calls=tf.data.AUTOTUNE)
  batches = _padded_eval_batches(images, max_share, layout, image_size)
  batches = batches.prefetch(tf.data.AUTOTUNE)
  return batches.with_options(_deterministic_options()).as_numpy_iterator()


def load_image_directory(directory: str, image_size: int) -> np.ndarray:
  """Every image file directly in `directory`, in name order.

  Returns:
    float32 [N, S, S, 3] in [0, 1]: each image's centre square, resized
    (antialiased).

  Raises:
    ValueError: `directory` is not a directory or holds no image files.
  """
  check_image_size(image_size)
  return np.stack([
      center_crop_resize(decode_image_file(path), image_size).numpy()
      for path in list_image_files(directory, recursive=False)])
