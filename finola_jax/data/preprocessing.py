# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Resizing, cropping and colour augmentation of images (TensorFlow ops).

Training images are stored at a few times the output size (`stack_for_training`
/ `store_for_training`) and cropped by `random_crop_boxes` + `crops` (random
resized crop with flips, bilinear) and `augment_colour`; a stream of encoded
images can instead decode only a crop's window (`random_crop_window`, the same
boxes in whole pixels) and resize it (`resize_crop`). Evaluation images are
the centred square, resized (`center_crop_resize`).

TensorFlow is imported on first use: the recipe's constants need none.
"""

from __future__ import annotations

import itertools
import math
from typing import NamedTuple, Sequence

import numpy as np
from etils import epy

with epy.lazy_imports():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

# Random resized crop: the crop covers this fraction of the source image's area
# and has a width/height ratio in this range (Inception-style).
CROP_AREA_RANGE = (0.08, 1.0)
CROP_ASPECT_RATIO_RANGE = (3 / 4, 4 / 3)

# Colour augmentation: the RGB channels in a random order, each then scaled by
# a gain from this range (clipped to [0, 1]). Seven of the 13 embedded training
# photographs are greyscale; without it a model learns their palette and
# reconstructs unseen colours worse than their mean (see the README).
COLOUR_GAIN_RANGE = (0.7, 1.3)
CHANNEL_PERMUTATIONS = tuple(itertools.permutations(range(3)))

# Training images are resized once (antialiased) so their shorter side is this
# multiple of the output size; a batch is then resampled by one
# `crop_and_resize` call. In-memory sources (a few photographs up to a few
# thousand files) are kept large enough that even the smallest crop (~1
# output size of stored pixels) is hardly upsampled: small crops are what makes
# a handful of photographs many distinct training images. TFDS images are
# decoded per example, and at 2x the crops span ~0.5-2.7 output sizes, so a
# bilinear sample per output pixel neither blurs nor aliases much.
IN_MEMORY_STORED_SIZE_FACTOR = 4
TFDS_STORED_SIZE_FACTOR = 2


def check_image_size(image_size: int) -> None:
  """Raises ValueError unless image_size >= 1."""
  if image_size < 1:
    raise ValueError(f"image_size must be >= 1, got {image_size}.")


def resize(image: tf.Tensor, height, width) -> tf.Tensor:
  """Antialiased bilinear resize: [H, W, 3] (any dtype, 0..255) -> float32."""
  return tf.image.resize(
      tf.cast(image, tf.float32), tf.stack([height, width]),
      method="bilinear", antialias=True)


def crop_resize(image: tf.Tensor, top, left, size: int | tf.Tensor,
                 image_size: int) -> tf.Tensor:
  """A square crop of `image` (0..255) resized: float32 [S, S, 3] in [0, 1]."""
  crop = image[top:top + size, left:left + size]
  return resize(crop, image_size, image_size) / 255.0


def center_crop_resize(image: tf.Tensor, image_size: int) -> tf.Tensor:
  """The largest centred square of uint8 [H, W, 3], resized: float32 [S, S, 3]."""
  height, width = tf.shape(image)[0], tf.shape(image)[1]
  size = tf.minimum(height, width)
  return crop_resize(image, (height - size) // 2, (width - size) // 2, size,
                      image_size)


def centre_and_quadrant_crops(photo: np.ndarray, image_size: int) -> np.ndarray:
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
  return np.stack([crop_resize(photo, t, l, s, image_size).numpy()
                   for t, l, s in boxes])


def store_for_training(image: tf.Tensor, image_size: int,
                        factor: int) -> tf.Tensor:
  """Resizes so the shorter side is `factor * S`: float32 [h, w, 3]."""
  height = tf.cast(tf.shape(image)[0], tf.float32)
  width = tf.cast(tf.shape(image)[1], tf.float32)
  scale = factor * image_size / tf.minimum(height, width)
  stored_height = tf.maximum(1, tf.cast(tf.round(height * scale), tf.int32))
  stored_width = tf.maximum(1, tf.cast(tf.round(width * scale), tf.int32))
  return resize(image, stored_height, stored_width)


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


def random_crop_window(height, width, uniforms: tf.Tensor) -> tf.Tensor:
  """A random resized crop of an [height, width] image, in whole pixels.

  The box is drawn as by `random_crop_boxes` (same `uniforms`, same
  fractions of the image), then its ends are rounded to pixel boundaries.

  Args:
    height: int [], the image's height.
    width: int [], the image's width.
    uniforms: float32 [4], U[0, 1) draws.

  Returns:
    int32 [4]: (top, left, crop_height, crop_width), at least 1 pixel and
    inside the image: the `crop_window` of `tf.image.decode_and_crop_jpeg`.
  """
  height = tf.cast(height, tf.float32)[None]
  width = tf.cast(width, tf.float32)[None]
  top, left, crop_height, crop_width = _sample_crop_boxes(
      height, width, uniforms[None])

  def ends(start, length, limit):
    first = tf.clip_by_value(tf.round(start), 0.0, limit - 1.0)
    last = tf.clip_by_value(tf.round(start + length), first + 1.0, limit)
    return first, last - first

  top, crop_height = ends(top, crop_height, height)
  left, crop_width = ends(left, crop_width, width)
  return tf.cast(tf.concat([top, left, crop_height, crop_width], 0), tf.int32)


def resize_crop(crop: tf.Tensor, image_size: int, flip) -> tf.Tensor:
  """A cropped window (0..255) resized to S x S and flipped if `flip`.

  A window up to `TFDS_STORED_SIZE_FACTOR` * S on its longer side is
  resampled bilinearly, as `crops` samples a stored copy of that size; a
  larger one (from a large photograph) is antialiased. The antialiased
  resize costs about three times the bilinear one.

  Returns float32 [S, S, 3] in [0, 1].
  """
  def bilinear():
    return tf.image.resize(tf.cast(crop, tf.float32), [image_size, image_size],
                           method="bilinear")

  def antialiased():
    return resize(crop, image_size, image_size)

  small = (tf.reduce_max(tf.shape(crop)[:2])
           <= TFDS_STORED_SIZE_FACTOR * image_size)
  image = tf.cond(small, bilinear, antialiased) / 255.0
  return tf.cond(flip, lambda: tf.reverse(image, axis=[1]), lambda: image)


class StoredImages(NamedTuple):
  """Training images padded into one tensor, so a batch is cropped by one op.

  Each image is stored (see `store_for_training`) in the top-left corner of
  its canvas.
  """

  pixels: tf.Tensor  # [N, H, W, 3], 0..255; image i fills [:heights[i], :widths[i]].
  heights: tf.Tensor  # float32 [N]
  widths: tf.Tensor  # float32 [N]


def random_crop_boxes(stored: StoredImages, image_index: tf.Tensor,
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


def crops(stored: StoredImages, boxes: tf.Tensor, image_index: tf.Tensor,
           image_size: int) -> tf.Tensor:
  """Bilinear crops of stored images: float32 [B, S, S, 3] in [0, 1]."""
  return tf.image.crop_and_resize(stored.pixels, boxes, image_index,
                                  [image_size, image_size]) / 255.0


def augment_colour(images: tf.Tensor, uniforms: tf.Tensor) -> tf.Tensor:
  """Permutes each image's channels and scales them (`COLOUR_GAIN_RANGE`).

  Args:
    images: float32 [B, S, S, 3] in [0, 1].
    uniforms: float32 [B, 4], U[0, 1) draws: 1 for the permutation, 3 gains.

  Returns:
    float32 [B, S, S, 3] in [0, 1].
  """
  count = len(CHANNEL_PERMUTATIONS)
  choice = tf.minimum(tf.cast(uniforms[:, 0] * count, tf.int32), count - 1)
  permutation = tf.gather(tf.constant(CHANNEL_PERMUTATIONS), choice)
  images = tf.gather(images, permutation, axis=3, batch_dims=1)
  low, high = COLOUR_GAIN_RANGE
  gains = low + (high - low) * uniforms[:, 1:]
  return tf.clip_by_value(images * gains[:, None, None, :], 0.0, 1.0)


def stack_for_training(images: Sequence[np.ndarray],
                        image_size: int) -> StoredImages:
  """Resizes uint8 [H_i, W_i, 3] images for training and pads them together."""
  resized = [
      tf.saturate_cast(tf.round(store_for_training(
          image, image_size, IN_MEMORY_STORED_SIZE_FACTOR)), tf.uint8).numpy()
      for image in images]
  canvas_height = max(image.shape[0] for image in resized)
  canvas_width = max(image.shape[1] for image in resized)
  pixels = np.zeros((len(resized), canvas_height, canvas_width, 3), np.uint8)
  for i, image in enumerate(resized):
    pixels[i, :image.shape[0], :image.shape[1]] = image
  return StoredImages(
      tf.constant(pixels),
      tf.constant([image.shape[0] for image in resized], tf.float32),
      tf.constant([image.shape[1] for image in resized], tf.float32))

