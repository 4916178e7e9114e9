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
every process/device layout, and resuming at step t costs nothing. COCO-format
sets ("coco:DIR") draw their files the same way but decode them as the batches
are consumed (`sources.drawn_file_batches`). For TFDS each
process reads its own shard with seeded shuffling; resuming at step t skips
t * local_batch records before decoding (see `create_train_iterator`).

Evaluation streams: images are decoded as batches are consumed, and every
example carries its ``index`` in the evaluated split, whatever the layout. A
file that cannot be decoded is skipped with a warning naming it (its index is
missing and the last batch has more padding), in training and evaluation
alike: see `sources.decode_or_skip`.

Dataset problems the user must fix (a missing folder, no images, a bad IDX
file, an unknown name) raise `sources.DatasetError`.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
from etils import epy

from finola_jax.data import preprocessing
from finola_jax.data import sources
from finola_jax.data.layout import BatchLayout
from finola_jax.data.layout import batch_layout

with epy.lazy_imports():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

__all__ = ("BatchLayout", "batch_eval_examples", "batch_layout",
           "create_directory_eval_iterator", "create_eval_iterator",
           "create_train_iterator", "hide_accelerators_from_tensorflow")


def hide_accelerators_from_tensorflow() -> None:
  """Keeps TensorFlow off GPUs and TPUs, whose memory JAX needs."""
  try:
    tf.config.set_visible_devices([], "GPU")
    tf.config.set_visible_devices([], "TPU")
  except RuntimeError:  # TensorFlow already initialised its devices: too late.
    pass


# ----------------------------------------------------------------- training ---


def create_train_iterator(
    dataset: str, *, image_size: int, global_batch_size: int, seed: int,
    start_step: int = 0, data_dir: str | None = None,
    colour_augmentation: bool = True, decode_crop_only: bool = False,
    process_index: int | None = None, process_count: int | None = None,
    local_device_count: int | None = None) -> Iterator[dict[str, np.ndarray]]:
  """Endless augmented training batches for steps start_step, start_step+1, ...

  Augmentation (IDX sources: random horizontal flip only): random resized
  crop (area fraction `preprocessing.CROP_AREA_RANGE`, aspect ratio
  `preprocessing.CROP_ASPECT_RATIO_RANGE`), bilinear resampling from images
  stored at a few times the output size (antialiased), random horizontal
  flip and, if `colour_augmentation`, a random channel order and per-channel
  gains (`preprocessing.COLOUR_GAIN_RANGE`).

  In-memory sources (embedded, folder) draw images with replacement; their
  global batch at a step is the same for any process/device layout. A folder
  is held in memory at 4 times the output size (shorter side), padded to the
  largest image: keep it to a few thousand images and use TFDS beyond. TFDS
  sources shuffle (seeded) this process's shard of "train" and repeat it,
  decoding each image as it comes (`decode_crop_only`).

  Args:
    dataset: `EMBEDDED`, "folder:DIR" / an existing DIR, "idx:DIR" (its
      training split's images), "coco:DIR" (its training split's images,
      without boxes) or a TFDS name.
    image_size: S, the side of the square output images.
    global_batch_size: examples per step over all processes.
    seed: the batch at a step is a function of (seed, step) only.
    start_step: first step to produce. In-memory sources start there for free;
      TFDS sources read (without decoding) start_step * local_batch records.
    data_dir: TFDS data directory (TFDS default if None).
    colour_augmentation: whether to permute and scale colour channels.
    decode_crop_only: TFDS sources decode only each crop's window of a JPEG
      and resize it, instead of decoding and resizing the whole image first:
      the same crop boxes, a cheaper host (see
      `sources.streaming_train_batches`). In-memory sources ignore it.
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
  source = sources.from_name(dataset, data_dir)
  batches = source.train_batches(
      image_size=image_size, layout=layout, seed=seed, start_step=start_step,
      colour_augmentation=colour_augmentation,
      decode_crop_only=decode_crop_only)
  batches = batches.map(
      lambda batch: {k: layout.to_devices(v) for k, v in batch.items()}
  ).prefetch(tf.data.AUTOTUNE)
  return batches.with_options(sources.deterministic_options()).as_numpy_iterator()


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
             .map(lambda batch: {k: layout.to_devices(v)
                                 for k, v in batch.items()})
             .prefetch(tf.data.AUTOTUNE))
  return batches.with_options(sources.deterministic_options()).as_numpy_iterator()


def create_eval_iterator(
    dataset: str, *, image_size: int, global_batch_size: int,
    data_dir: str | None = None, process_index: int | None = None,
    process_count: int | None = None, local_device_count: int | None = None,
    max_examples: int | None = None) -> Iterator[dict[str, np.ndarray]]:
  """One deterministic pass over the validation images, decoded as it goes.

  Validation images: for `EMBEDDED`, each held-out photograph's centre square
  and its four quadrants (15 images); for a folder, the held-out files; for
  IDX files, the ``t10k`` split or the held-out sixth of ``train-*``, padded
  or resized as for training; for "coco:DIR", the evaluation split's images
  in the order of its annotation file; for TFDS, the "validation" split (else
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
  examples, max_share = sources.from_name(dataset, data_dir).eval_examples(
      image_size=image_size, layout=layout, max_examples=max_examples)
  return batch_eval_examples(examples, max_share, layout, image_size)


def create_directory_eval_iterator(
    directory: str, *, image_size: int, global_batch_size: int,
    process_index: int | None = None, process_count: int | None = None,
    local_device_count: int | None = None) -> Iterator[dict[str, np.ndarray]]:
  """One pass over every image file directly in `directory`, in name order.

  Each image's centre square, resized (antialiased); decoded as the batches
  are consumed, so a folder of any size streams through. Batches, shares and
  padding as in `create_eval_iterator`.

  Files that cannot be decoded are skipped with a warning naming each.

  Raises:
    DatasetError: `directory` is not a directory or holds no image files.
  """
  preprocessing.check_image_size(image_size)
  layout = batch_layout(global_batch_size, process_index, process_count,
                        local_device_count)
  paths = sources.list_image_files(directory, recursive=False)
  examples, max_share = sources.file_examples(paths, layout, image_size)
  return batch_eval_examples(examples, max_share, layout, image_size)
