# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Metric writers: CLU's TensorBoard + console writers, plus a JSONL log.

Files go through ``etils.epath``, so a workdir may be a ``gs://`` path.
"""

from __future__ import annotations

import io
import json
from typing import Any, Mapping

import jax
import matplotlib.image
import numpy as np
from clu import metric_writers
from etils import epath
from clu.metric_writers import interface


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


def image_grid(columns) -> np.ndarray:
  """Tiles ``[B, H, W, 3]`` arrays side by side per example, examples stacked.

  Returns ``[B·H, K·W, 3]`` for ``K`` columns, values clipped to [0, 1].
  """
  rows = np.concatenate([np.asarray(c, np.float32) for c in columns], axis=2)
  return np.clip(rows.reshape((-1,) + rows.shape[2:]), 0.0, 1.0)


def save_png(path: str, image: np.ndarray) -> None:
  """Writes an ``[H, W, 3]`` float image in [0, 1] as a PNG file."""
  buffer = io.BytesIO()
  matplotlib.image.imsave(buffer, np.clip(image, 0.0, 1.0), format="png")
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(buffer.getvalue())
