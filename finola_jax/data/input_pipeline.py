# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Image input pipelines: tf.data in, numpy batches out.

TensorFlow is used here only to read and augment images; no model code touches
it. Batches come out as numpy arrays laid out for `jax.pmap`:
``[local_device_count, per_device_batch, ...]``, images float32 in [0, 1].
Dataset names: see `sources`. Programs that also run JAX on accelerators call
`hide_accelerators_from_tensorflow` first (importing this module does not).

Determinism: a batch is a pure function of (seed, step). For the in-memory
sources (embedded, folder, idx) example k of the global batch at step t is drawn from
row k of a stateless random draw seeded by (seed, t), and process p builds only
rows [p * local_batch, (p + 1) * local_batch): the global batch is the same for
every process/device layout, and resuming at step t costs nothing. For TFDS each
process reads its own shard with seeded shuffling; resuming at step t skips
t * local_batch records before decoding (see `create_train_iterator`).

Evaluation streams: images are decoded as batches are consumed, and every
example carries its ``index`` in the evaluated split, whatever the layout.
"""

import functools
from typing import Iterator, NamedTuple, Sequence

import jax
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from finola_jax.data import idx
from finola_jax.data import preprocessing
from finola_jax.data import sources

# Encoded (not decoded) TFDS records shuffled together: ~1 GB for ImageNet.
_TFDS_SHUFFLE_BUFFER = 10_000
# IDX images fitted to the image size this many at a time (bounds the float
# copy a resize makes).
_IDX_FIT_CHUNK = 4096


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


def hide_accelerators_from_tensorflow() -> None:
  """Keeps TensorFlow off GPUs and TPUs, whose memory JAX needs."""
  try:
    tf.config.set_visible_devices([], "GPU")
    tf.config.set_visible_devices([], "TPU")
  except RuntimeError:  # TensorFlow already initialised its devices: too late.
    pass


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


@functools.cache
def _embedded_training_images(image_size: int) -> preprocessing.StoredImages:
  # Cached: resizing the large photographs dominates creating an iterator.
  return preprocessing.stack_for_training(
      [sources.embedded_photo(name) for name in sources.EMBEDDED_TRAIN_PHOTOS],
      image_size)


def _in_memory_train_dataset(stored: preprocessing.StoredImages, *,
                             image_size: int, layout: BatchLayout, seed: int,
                             start_step: int,
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
    boxes = preprocessing.random_crop_boxes(stored, image_index,
                                            uniforms[:, 1:6], image_size)
    rows = slice(first_row, first_row + layout.local_batch_size)
    crops = preprocessing.crops(stored, boxes[rows], image_index[rows],
                                image_size)
    if colour_augmentation:
      crops = preprocessing.augment_colour(crops, uniforms[rows, 6:])
    return {"image": _to_device_layout(crops, layout)}

  return tf.data.Dataset.counter(start_step).map(
      batch_for_step, num_parallel_calls=tf.data.AUTOTUNE)


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


def _idx_train_dataset(stored: np.ndarray, *, layout: BatchLayout, seed: int,
                       start_step: int) -> tf.data.Dataset:
  """Batches of stored greyscale images ``[N, S, S]``, randomly flipped.

  No crops or colour changes: the images are small, centred objects and grey
  (the colour augmentation of the other sources would make them coloured).
  Like the other in-memory sources, a pure function of (seed, step) and the
  same global batch for any layout.
  """
  num_images = len(stored)
  global_batch_size = layout.local_batch_size * layout.process_count
  rows = slice(layout.process_index * layout.local_batch_size,
               (layout.process_index + 1) * layout.local_batch_size)
  pixels = tf.constant(stored)

  def batch_for_step(step):
    uniforms = tf.random.stateless_uniform(
        [global_batch_size, 2], seed=tf.stack([tf.constant(seed, tf.int64), step]))
    image_index = tf.minimum(
        tf.cast(uniforms[rows, 0] * num_images, tf.int32), num_images - 1)
    images = tf.gather(pixels, image_index)
    flip = uniforms[rows, 1] < 0.5
    images = tf.where(flip[:, None, None], tf.reverse(images, axis=[2]), images)
    images = tf.repeat(tf.cast(images, tf.float32)[..., None] / 255.0, 3,
                       axis=-1)
    return {"image": _to_device_layout(images, layout)}

  return tf.data.Dataset.counter(start_step).map(
      batch_for_step, num_parallel_calls=tf.data.AUTOTUNE)


def _tfds_train_dataset(name: str, *, data_dir: str | None, image_size: int,
                        layout: BatchLayout, seed: int, start_step: int,
                        colour_augmentation: bool) -> tf.data.Dataset:
  """Shuffled, repeated, augmented batches of this process's shard of "train"."""
  builder = sources.tfds_builder(name, data_dir)
  split = tfds.split_for_jax_process(
      "train", process_index=layout.process_index,
      process_count=layout.process_count, drop_remainder=True)
  read_config = tfds.ReadConfig(shuffle_seed=seed,
                                options=_deterministic_options())
  encoded = sources.read_tfds_split(
      builder, split, shuffle_files=True,
      read_config=read_config).map(lambda ex: ex["image"])
  batch_size = layout.local_batch_size
  batch_seed = tf.constant([seed, layout.process_index], tf.int64)

  def decode_and_store(encoded_image):
    image = preprocessing.store_for_training(
        sources.decode_image(encoded_image), image_size,
        preprocessing.TFDS_STORED_SIZE_FACTOR)
    return image, tf.shape(image)[0], tf.shape(image)[1]

  def augment_batch(step, batch):
    pixels, heights, widths = batch
    stored = preprocessing.StoredImages(
        pixels, tf.cast(heights, tf.float32), tf.cast(widths, tf.float32))
    uniforms = tf.random.stateless_uniform(
        [batch_size, 9],
        seed=tf.random.experimental.stateless_fold_in(batch_seed, step))
    image_index = tf.range(batch_size)
    boxes = preprocessing.random_crop_boxes(stored, image_index,
                                            uniforms[:, :5], image_size)
    crops = preprocessing.crops(stored, boxes, image_index, image_size)
    if colour_augmentation:
      crops = preprocessing.augment_colour(crops, uniforms[:, 5:])
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

  Augmentation (IDX sources: random horizontal flip only): random resized crop (area fraction `preprocessing.CROP_AREA_RANGE`, aspect
  ratio `preprocessing.CROP_ASPECT_RATIO_RANGE`), bilinear resampling from images stored at
  a few times the output size (antialiased), random horizontal flip and, if
  `colour_augmentation`, a random channel order and per-channel gains
  (`preprocessing.COLOUR_GAIN_RANGE`).

  In-memory sources (embedded, folder) draw images with replacement; their
  global batch at a step is the same for any process/device layout. A folder
  is held in memory at 4 times the output size (shorter side), padded to the
  largest image: keep it to a few thousand images and use TFDS beyond. TFDS
  sources shuffle (seeded) this process's shard of "train" and repeat it.

  Args:
    dataset: `EMBEDDED`, "folder:DIR" / an existing DIR, "idx:DIR" (its
      training split's images) or a TFDS name.
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
  preprocessing.check_image_size(image_size)
  if start_step < 0:
    raise ValueError(f"start_step must be >= 0, got {start_step}.")
  layout = batch_layout(global_batch_size, process_index, process_count,
                        local_device_count)
  directory = sources.folder_path(dataset)
  idx_directory = sources.idx_path(dataset)
  if idx_directory is not None:
    images = sources.load_idx(idx_directory, with_labels=False).train_images
    batches = _idx_train_dataset(idx_stored_images(images, image_size),
                                 layout=layout, seed=seed,
                                 start_step=start_step)
  elif dataset == sources.EMBEDDED or directory is not None:
    if directory is None:
      stored = _embedded_training_images(image_size)
    else:
      stored = preprocessing.stack_for_training(
          [sources.decode_image_file(path)
           for path in sources.folder_split_paths(directory)[0]], image_size)
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


def batch_eval_examples(examples: tf.data.Dataset, max_share: int,
                         layout: BatchLayout,
                         image_size: int) -> Iterator[dict[str, np.ndarray]]:
  """Batches this process's eval examples, padded to the largest share.

  `examples` yield {"image": float32 [S, S, 3], "index": int32 []}. Every
  process yields ceil(max_share / local_batch) batches (pmapped collectives
  need them in step); padding examples are zeros with mask 0 and index -1.
  """
  num_batches = -(-max_share // layout.local_batch_size)
  padding = tf.data.Dataset.from_tensors({
      "image": tf.zeros([image_size, image_size, 3], tf.float32),
      "index": tf.constant(-1, tf.int32),
      "mask": tf.constant(0.0, tf.float32)}).repeat()
  real = examples.map(lambda example: dict(example, mask=tf.constant(1.0)))
  batches = (real.concatenate(padding)
             .take(num_batches * layout.local_batch_size)
             .batch(layout.local_batch_size)
             .map(lambda batch: {k: _to_device_layout(v, layout)
                                 for k, v in batch.items()})
             .prefetch(tf.data.AUTOTUNE))
  return batches.with_options(_deterministic_options()).as_numpy_iterator()


def _interleaved_share(count: int, layout: BatchLayout) -> np.ndarray:
  """Indices p, p + P, p + 2P, ... of `count` examples for process p of P."""
  return np.arange(count)[layout.process_index::layout.process_count]


def _file_examples(paths: Sequence[str], layout: BatchLayout,
                   image_size: int) -> tuple[tf.data.Dataset, int]:
  """(this process's share of the files, decoded lazily; the largest share)."""
  share = _interleaved_share(len(paths), layout)
  files = tf.data.Dataset.from_tensor_slices(
      {"path": np.array(paths)[share], "index": share.astype(np.int32)})
  examples = files.map(
      lambda file: {"image": preprocessing.center_crop_resize(
          sources.read_image_file(file["path"]), image_size),
                    "index": file["index"]},
      num_parallel_calls=tf.data.AUTOTUNE)
  return examples, -(-len(paths) // layout.process_count)


def _embedded_eval_examples(layout: BatchLayout, image_size: int,
                            max_examples: int | None):
  """(this process's share of the embedded validation views; largest share)."""
  images = np.concatenate([
      preprocessing.centre_and_quadrant_crops(sources.embedded_photo(name),
                                              image_size)
      for name in sources.EMBEDDED_VALIDATION_PHOTOS])[:max_examples]
  share = _interleaved_share(len(images), layout)
  examples = tf.data.Dataset.from_tensor_slices(
      {"image": images[share], "index": share.astype(np.int32)})
  return examples, -(-len(images) // layout.process_count)


def _idx_eval_examples(directory: str, layout: BatchLayout, image_size: int,
                       max_examples: int | None):
  """(this process's share of the IDX evaluation images; the largest share)."""
  images = sources.load_idx(directory, with_labels=False).eval_images
  images = images[:max_examples]
  share = _interleaved_share(len(images), layout)
  examples = tf.data.Dataset.from_tensor_slices({
      "image": idx.to_model_images(images[share], image_size,
                                   idx.default_fit(images, image_size)),
      "index": share.astype(np.int32)})
  return examples, -(-len(images) // layout.process_count)


def _tfds_eval_examples(name: str, data_dir: str | None, layout: BatchLayout,
                        image_size: int, max_examples: int | None):
  """(this process's shard of the validation split; the largest shard)."""
  builder = sources.tfds_builder(name, data_dir)
  split = sources.limit_split(builder, sources.validation_split_name(builder),
                              max_examples)
  shards = [tfds.split_for_jax_process(split, process_index=p,
                                       process_count=layout.process_count)
            for p in range(layout.process_count)]
  sizes = [builder.info.splits[shard].num_examples for shard in shards]
  # Shards are consecutive ranges of the split, in process order.
  first = sum(sizes[:layout.process_index])
  examples = sources.read_tfds_split(
      builder, shards[layout.process_index], shuffle_files=False).enumerate(
          start=first).map(
              lambda index, example: {
                  "image": preprocessing.center_crop_resize(
                      sources.decode_image(example["image"]), image_size),
                  "index": tf.cast(index, tf.int32)},
              num_parallel_calls=tf.data.AUTOTUNE)
  return examples, max(sizes)


def create_eval_iterator(
    dataset: str, *, image_size: int, global_batch_size: int,
    data_dir: str | None = None, process_index: int | None = None,
    process_count: int | None = None, local_device_count: int | None = None,
    max_examples: int | None = None) -> Iterator[dict[str, np.ndarray]]:
  """One deterministic pass over the validation images, decoded as it goes.

  Validation images: for `EMBEDDED`, each held-out photograph's centre square
  and its four quadrants (15 images); for a folder, the held-out files; for
  IDX files, the ``t10k`` split or the held-out sixth of ``train-*``, padded
  or resized as for training; for TFDS, the "validation" split (else
  "test"). Images of the other sources are centre-cropped to a square and
  resized. No randomness. Process p takes its own disjoint
  share (every process_count-th image from p for embedded and folder sources,
  its `tfds.split_for_jax_process` shard for TFDS).

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
     "index": int32 [local_device_count, per_device],
     "mask": float32 [local_device_count, per_device]}: index is the image's
    position in the validation split (-1 for padding); mask 1 for real
    images, 0 for the zero padding that fills the last batch. All processes
    yield the same number of batches.
  """
  preprocessing.check_image_size(image_size)
  sources.check_max_examples(max_examples)
  layout = batch_layout(global_batch_size, process_index, process_count,
                        local_device_count)
  directory = sources.folder_path(dataset)
  idx_directory = sources.idx_path(dataset)
  if idx_directory is not None:
    examples, max_share = _idx_eval_examples(idx_directory, layout, image_size,
                                             max_examples)
  elif dataset == sources.EMBEDDED:
    examples, max_share = _embedded_eval_examples(layout, image_size,
                                                  max_examples)
  elif directory is not None:
    paths = sources.folder_split_paths(directory)[1][:max_examples]
    examples, max_share = _file_examples(paths, layout, image_size)
  else:
    examples, max_share = _tfds_eval_examples(dataset, data_dir, layout,
                                              image_size, max_examples)
  return batch_eval_examples(examples, max_share, layout, image_size)


def create_directory_eval_iterator(
    directory: str, *, image_size: int, global_batch_size: int,
    process_index: int | None = None, process_count: int | None = None,
    local_device_count: int | None = None) -> Iterator[dict[str, np.ndarray]]:
  """One pass over every image file directly in `directory`, in name order.

  Each image's centre square, resized (antialiased); decoded as the batches
  are consumed, so a folder of any size streams through. Batches, shares and
  padding as in `create_eval_iterator`.

  Raises:
    ValueError: `directory` is not a directory or holds no image files.
  """
  preprocessing.check_image_size(image_size)
  layout = batch_layout(global_batch_size, process_index, process_count,
                        local_device_count)
  paths = sources.list_image_files(directory, recursive=False)
  examples, max_share = _file_examples(paths, layout, image_size)
  return batch_eval_examples(examples, max_share, layout, image_size)
