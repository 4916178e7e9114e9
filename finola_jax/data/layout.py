# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""How a global batch is split over processes and their local devices."""

from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np
from etils import epy

with epy.lazy_imports():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top


class BatchLayout(NamedTuple):
  """How a global batch is split over processes and their local devices."""

  process_index: int
  process_count: int
  local_device_count: int
  per_device_batch_size: int

  @property
  def local_batch_size(self) -> int:
    return self.local_device_count * self.per_device_batch_size

  @property
  def global_batch_size(self) -> int:
    return self.process_count * self.local_batch_size

  @property
  def local_rows(self) -> slice:
    """This process's rows of a global batch: [p * local, (p + 1) * local)."""
    first = self.process_index * self.local_batch_size
    return slice(first, first + self.local_batch_size)

  def interleaved_share(self, count: int) -> np.ndarray:
    """Indices p, p + P, p + 2P, ... of `count` examples for process p of P."""
    return np.arange(count)[self.process_index::self.process_count]

  def largest_share(self, count: int) -> int:
    """The most examples any process gets of `count` split as evenly as can be."""
    return -(-count // self.process_count)

  def to_devices(self, images: tf.Tensor) -> tf.Tensor:
    """[local_batch, ...] -> [local_device_count, per_device_batch, ...]."""
    return tf.reshape(images, tf.concat(
        [[self.local_device_count, self.per_device_batch_size],
         tf.shape(images)[1:]], axis=0))


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
