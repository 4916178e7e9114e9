# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Tests for experiments.bench_input: its folder and one tiny run."""

import os
import re
import subprocess
import sys

import numpy as np

from experiments import bench_input
from finola_jax.data import sources
from tests import helpers


def test_synthetic_folder_holds_imagenet_sized_jpegs(tmp_path):
  bench_input.write_jpeg_folder(str(tmp_path), 4, seed=0)
  encoded = bench_input.read_encoded(str(tmp_path))
  assert len(encoded) == 4
  for data in encoded:
    assert data[:2] == b"\xff\xd8"  # JPEG.
  images = [sources.decode_image_file(path) for path in
            sources.list_image_files(str(tmp_path), recursive=False)]
  for image in images:
    assert max(image.shape[:2]) == 500 and 333 <= min(image.shape[:2]) <= 500
    assert image.std() > 5  # A photograph, not a flat fill.
  assert not np.array_equal(images[0][:333, :333], images[1][:333, :333])


def test_main_times_every_path_and_thread_count(tmp_path):
  report = tmp_path / "report.md"
  subprocess.run(
      [sys.executable, "-m", "experiments.bench_input", "--num_images=3",
       "--image_size=8", "--batch_size=2", "--warmup_batches=1",
       "--batches=2", "--step_images_per_s=10", "--devices_per_host=2",
       f"--output={report}"],
      check=True, env=helpers.program_env(), cwd=helpers.REPO_ROOT,
      capture_output=True, timeout=120)
  text = report.read_text()
  number = r"([\d.]+)"
  rows = re.findall(rf"^\| (\w+) \| (\w+) \| {number} \| {number} \| "
                    rf"{number} \|$", text, re.MULTILINE)
  assert [row[:2] for row in rows] == [("whole", "1"), ("crop_only", "1"),
                                       ("whole", "all"), ("crop_only", "all")]
  cores = len(os.sched_getaffinity(0))
  for _, threads, per_s, per_core, _ in rows:
    expected = float(per_s) / (1 if threads == "1" else cores)
    assert float(per_s) > 0 and abs(float(per_core) - expected) < 0.11
  assert "= 20 images/s:" in text
  assert re.search(r"crop_only / whole: [\d.]+× at one thread", text)
