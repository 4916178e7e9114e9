# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Metric writers: CLU's TensorBoard + console writers, plus a JSONL log.

Files go through ``etils.epath``, so a workdir may be a ``gs://`` path.
"""

from __future__ import annotations

import io
import json
from typing import Any, Mapping, Sequence

import jax
import numpy as np
import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont
from clu import metric_writers
from clu.metric_writers import interface
from etils import epath


class JsonlWriter(interface.MetricWriter):
  """Appends every scalar summary to ``path`` as one JSON object per line.

  ``{"step": 100, "train/loss": 0.01, ...}`` — the format of big_vision's
  ``big_vision_metrics.txt``; easy to load with pandas or plain ``json``.
  """

  def __init__(self, path: str):
    self._path = epath.Path(path)

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    record = {"step": int(step)}
    record.update({k: float(np.asarray(v)) for k, v in scalars.items()})
    with self._path.open("a") as f:
      f.write(json.dumps(record) + "\n")

  def write_summaries(self, step, values, metadata=None):
    del step, values, metadata

  def write_images(self, step, images):
    del step, images

  def write_videos(self, step, videos):
    del step, videos

  def write_audios(self, step, audios, *, sample_rate):
    del step, audios, sample_rate

  def write_texts(self, step, texts):
    del step, texts

  def write_histograms(self, step, arrays, num_buckets=None):
    del step, arrays, num_buckets

  def write_hparams(self, hparams):
    del hparams

  def flush(self):
    pass

  def close(self):
    pass


def create_writer(workdir: str) -> metric_writers.MetricWriter:
  """Console + TensorBoard + ``metrics.jsonl`` on process 0; console elsewhere."""
  if jax.process_index() > 0:
    return metric_writers.create_default_writer(None, just_logging=True)
  epath.Path(workdir).mkdir(parents=True, exist_ok=True)
  return metric_writers.MultiWriter([
      metric_writers.create_default_writer(workdir, asynchronous=False),
      JsonlWriter(str(epath.Path(workdir) / "metrics.jsonl")),
  ])


# A grid's images are enlarged (nearest neighbour) to at least this many
# pixels on a side: a 32×32 image is too small to judge.
MIN_CELL_SIZE = 128
_LABEL_HEIGHT = 24
_GUTTER = 4


def image_grid(columns: Sequence[Any], names: Sequence[str],
               min_cell_size: int = MIN_CELL_SIZE) -> np.ndarray:
  """Tiles ``[B, H, W, 3]`` columns side by side under a row of their names.

  Each image is enlarged by the integer factor that brings its side to at
  least ``min_cell_size`` (nearest neighbour: no pixel is invented); white
  gutters separate the images, and each column is labelled on top.

  Returns:
    ``[H', W', 3]`` float32 in [0, 1].
  """
  columns = [np.clip(np.asarray(c, np.float32), 0.0, 1.0) for c in columns]
  count, height, width = columns[0].shape[:3]
  factor = max(1, -(-min_cell_size // min(height, width)))
  row_step = factor * height + _GUTTER
  column_step = factor * width + _GUTTER
  grid = np.ones((_LABEL_HEIGHT + count * row_step - _GUTTER,
                  len(columns) * column_step - _GUTTER, 3), np.float32)
  label = PIL.Image.new("L", (grid.shape[1], _LABEL_HEIGHT), 255)
  draw = PIL.ImageDraw.Draw(label)
  font = PIL.ImageFont.load_default(size=_LABEL_HEIGHT - 8)
  for i, (column, name) in enumerate(zip(columns, names)):
    left = i * column_step
    draw.text((left + factor * width / 2, _LABEL_HEIGHT / 2), name, fill=0,
              font=font, anchor="mm")
    for j, image in enumerate(column):
      top = _LABEL_HEIGHT + j * row_step
      grid[top:top + factor * height, left:left + factor * width] = (
          image.repeat(factor, axis=0).repeat(factor, axis=1))
  grid[:_LABEL_HEIGHT] = np.asarray(label, np.float32)[..., None] / 255.0
  return grid


def save_png(path: str, image: np.ndarray) -> None:
  """Writes an ``[H, W, 3]`` float image in [0, 1] as a PNG file."""
  buffer = io.BytesIO()
  pixels = np.round(255 * np.clip(image, 0.0, 1.0)).astype(np.uint8)
  PIL.Image.fromarray(pixels).save(buffer, format="png")
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(buffer.getvalue())
