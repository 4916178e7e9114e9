# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
r"""Images per second the host's input pipeline makes, alone (no model).

Can one host feed its accelerators? This times the training input of a
streamed dataset (`sources.streaming_train_batches`, the TFDS source's
pipeline) on a folder of JPEGs, read into memory first so that the disk is
not measured: encoded bytes → decode → random resized crop → flip → colour
augmentation (``--colour_augmentation``) → float32 batches of
``--image_size``², as numpy arrays. Two paths:

* ``whole``: the source's default: decode the whole image, resize it so its
  shorter side is twice the output (antialiased), pad a batch into one
  tensor and crop it (`preprocessing.crops`, bilinear);
* ``crop_only``: ``decode_crop_only=True``: the same crop boxes, only the
  window decoded (`tf.image.decode_and_crop_jpeg`, as flax's ImageNet
  example and big_vision do) and resized (`preprocessing.resize_crop`).

Each runs with tf.data limited to one thread
(``threading.private_threadpool_size=1``, ``max_intra_op_parallelism=1``)
and with every core this process may use, after ``--warmup_batches``, for
``--batches`` batches. ``images/s per core`` is images/s divided by the
threads' cores; ``images/CPU-s`` is images per second of this process's
CPU time (user + system), which other processes on a shared machine
disturb less than wall time. The last lines give the cores a host needs
for ``--devices_per_host`` accelerators at ``--step_images_per_s`` each,
from three rates per core: the one-thread row's, the all-core row's per
CPU-second (both assume cores add up) and the all-core row's images/s per
core (what the cores of this machine gave together).

Without ``--folder`` it writes ``--num_images`` JPEGs (quality 90) of
ImageNet-like sizes (longer side 500, shorter 333–500) cut from the
bundled scikit-image photographs into a temporary directory, so it runs
offline. Usage::

  python3 -m experiments.bench_input                       # 256², batch 32
  python3 -m experiments.bench_input --folder=/data/imagenet/train/n01440764
"""

from __future__ import annotations

import os
import resource
import tempfile
import time
from typing import Dict, Iterator, List, Sequence

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

from finola_jax.data import sources

PATHS = ("whole", "crop_only")
ALL_CORES = "all"

_FOLDER = flags.DEFINE_string(
    "folder", None, "Image files (recursively); None: write synthetic JPEGs "
    "into a temporary directory.")
_NUM_IMAGES = flags.DEFINE_integer(
    "num_images", 64, "Synthetic JPEGs to write when --folder is not given.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 256, "Output side S.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Images per batch.")
_WARMUP_BATCHES = flags.DEFINE_integer(
    "warmup_batches", 3, "Batches drawn before timing (tf.data's autotuner "
    "and thread pools start up).")
_BATCHES = flags.DEFINE_integer("batches", 20, "Batches timed per row.")
_COLOUR_AUGMENTATION = flags.DEFINE_bool(
    "colour_augmentation", True, "Random channel order and gains, as the "
    "configs' colour_augmentation.")
_PATHS = flags.DEFINE_list("paths", list(PATHS),
                           f"Which paths to time, of {PATHS}.")
_STEP_IMAGES_PER_S = flags.DEFINE_float(
    "step_images_per_s", 255.0, "Images per second one accelerator trains on "
    "(default: the paper's step on an H100, batch 32 per device, README).")
_DEVICES_PER_HOST = flags.DEFINE_integer(
    "devices_per_host", 8, "Accelerators one host feeds.")
_SEED = flags.DEFINE_integer("seed", 0, "Synthetic images and crops.")
_OUTPUT = flags.DEFINE_string("output", None,
                              "Also write the markdown report to this file.")


def available_cores() -> int:
  """CPU cores this process may run on."""
  return len(os.sched_getaffinity(0))


def write_jpeg_folder(directory: str, num_images: int, seed: int) -> None:
  """``num_images`` photographic JPEGs of ImageNet-like sizes in `directory`.

  Each is a random window of a bundled photograph (both splits' lists),
  resized (antialiased) to a longer side of 500 and a shorter side in
  [333, 500], landscape three times in four, encoded at quality 90.
  """
  rng = np.random.default_rng(seed)
  names = sources.EMBEDDED_TRAIN_PHOTOS + sources.EMBEDDED_VALIDATION_PHOTOS
  for i in range(num_images):
    photo = sources.embedded_photo(names[i % len(names)])
    short = int(rng.integers(333, 501))
    height, width = (short, 500) if rng.random() < 0.75 else (500, short)
    # The largest window of the output's aspect ratio, scaled by 0.6-1.
    scale = rng.uniform(0.6, 1.0) * min(photo.shape[0] / height,
                                        photo.shape[1] / width)
    window_height = max(1, int(height * scale))
    window_width = max(1, int(width * scale))
    top = int(rng.integers(0, photo.shape[0] - window_height + 1))
    left = int(rng.integers(0, photo.shape[1] - window_width + 1))
    window = photo[top:top + window_height, left:left + window_width]
    image = tf.image.resize(window, [height, width], antialias=True)
    encoded = tf.io.encode_jpeg(
        tf.saturate_cast(tf.round(image), tf.uint8), quality=90)
    tf.io.write_file(os.path.join(directory, f"{i:05d}.jpg"), encoded)


def read_encoded(folder: str) -> List[bytes]:
  """The bytes of every image file under `folder`, in sorted path order."""
  paths = sources.list_image_files(folder, recursive=True)
  encoded = []
  for path in paths:
    with open(path, "rb") as f:
      encoded.append(f.read())
  return encoded


def thread_options(threads: int | None) -> tf.data.Options:
  """Deterministic options; ``threads`` = 1 confines tf.data to one thread."""
  options = sources.deterministic_options()
  if threads is not None:
    options.threading.private_threadpool_size = threads
    options.threading.max_intra_op_parallelism = threads
  return options


def batches(encoded: Sequence[bytes], path: str, threads: int | None, *,
            image_size: int, batch_size: int, seed: int,
            colour_augmentation: bool) -> Iterator[Dict[str, np.ndarray]]:
  """The streamed source's training batches of ``encoded``, endlessly."""
  stream = tf.data.Dataset.from_tensor_slices(
      tf.constant(list(encoded))).repeat()
  dataset = sources.streaming_train_batches(
      stream, image_size=image_size, batch_size=batch_size,
      batch_seed=tf.constant([seed, 0], tf.int64), start_step=0,
      colour_augmentation=colour_augmentation,
      decode_crop_only=path == "crop_only")
  return dataset.prefetch(tf.data.AUTOTUNE).with_options(
      thread_options(threads)).as_numpy_iterator()


def _cpu_seconds() -> float:
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def time_path(encoded: Sequence[bytes], path: str, threads: int | None, *,
              image_size: int, batch_size: int, warmup_batches: int,
              num_batches: int, seed: int,
              colour_augmentation: bool) -> Dict[str, float]:
  """{"images_per_s", "images_per_cpu_s"} over ``num_batches`` batches."""
  iterator = batches(encoded, path, threads, image_size=image_size,
                     batch_size=batch_size, seed=seed,
                     colour_augmentation=colour_augmentation)
  for _ in range(warmup_batches):
    next(iterator)
  cpu_start, start = _cpu_seconds(), time.perf_counter()
  for _ in range(num_batches):
    batch = next(iterator)
  seconds = time.perf_counter() - start
  cpu_seconds = _cpu_seconds() - cpu_start
  assert batch["image"].shape == (batch_size, image_size, image_size, 3)
  images = num_batches * batch_size
  return {"images_per_s": images / seconds,
          "images_per_cpu_s": images / max(cpu_seconds, 1e-9)}


def report(rows: List[Dict], *, cores: int, step_images_per_s: float,
           devices_per_host: int) -> str:
  """The markdown table and the cores a host needs, per path."""
  lines = ["| path | threads | images/s | images/s per core | images/CPU-s |",
           "|---|---|---|---|---|"]
  for row in rows:
    lines.append(f"| {row['path']} | {row['threads']} | "
                 f"{row['images_per_s']:.1f} | {row['per_core']:.1f} | "
                 f"{row['images_per_cpu_s']:.1f} |")
  by_key = {(row["path"], row["threads"]): row for row in rows}
  demand = step_images_per_s * devices_per_host
  lines += ["", f"Cores to feed {devices_per_host} devices × "
            f"{step_images_per_s:g} images/s = {demand:g} images/s:"]
  for path in PATHS:
    rates = []
    if (path, "1") in by_key:
      rates.append(("the one-thread rate", by_key[(path, "1")]["per_core"]))
    if (path, ALL_CORES) in by_key:
      every = by_key[(path, ALL_CORES)]
      rates += [("the all-core run's images/CPU-s", every["images_per_cpu_s"]),
                ("the all-core run's images/s per core", every["per_core"])]
    if rates:
      lines.append(f"- {path}: " + ", ".join(
          f"{demand / rate:.0f} at {what}" for what, rate in rates) + ".")
  if all((path, threads) in by_key for path in PATHS
         for threads in ("1", ALL_CORES)):
    ratios = [by_key[("crop_only", t)]["images_per_s"] /
              by_key[("whole", t)]["images_per_s"] for t in ("1", ALL_CORES)]
    lines.append(f"- crop_only / whole: {ratios[0]:.2f}× at one thread, "
                 f"{ratios[1]:.2f}× on all cores.")
  return "\n".join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  unknown = sorted(set(_PATHS.value) - set(PATHS))
  if unknown:
    raise app.UsageError(f"--paths: unknown {unknown}; choose from {PATHS}.")
  if min(_BATCHES.value, _BATCH_SIZE.value, _IMAGE_SIZE.value) < 1:
    raise app.UsageError("--batches, --batch_size and --image_size must be "
                         ">= 1.")
  tf.config.set_visible_devices([], "GPU")
  with tempfile.TemporaryDirectory() as scratch:
    folder = _FOLDER.value
    if folder is None:
      folder = scratch
      write_jpeg_folder(folder, _NUM_IMAGES.value, _SEED.value)
    encoded = read_encoded(folder)
  cores = available_cores()
  mean_kb = sum(map(len, encoded)) / len(encoded) / 1e3
  print(f"{len(encoded)} images, {mean_kb:.0f} kB each on average; output "
        f"{_IMAGE_SIZE.value}², batch {_BATCH_SIZE.value}, colour "
        f"augmentation {_COLOUR_AUGMENTATION.value}; {cores} cores; load "
        f"average {os.getloadavg()[0]:.2f}", flush=True)
  rows = []
  for threads in (1, None):
    for path in _PATHS.value:
      figures = time_path(
          encoded, path, threads, image_size=_IMAGE_SIZE.value,
          batch_size=_BATCH_SIZE.value, warmup_batches=_WARMUP_BATCHES.value,
          num_batches=_BATCHES.value, seed=_SEED.value,
          colour_augmentation=_COLOUR_AUGMENTATION.value)
      thread_cores = 1 if threads else cores
      rows.append(dict(figures, path=path,
                       threads=str(threads or ALL_CORES),
                       per_core=figures["images_per_s"] / thread_cores))
      print(f"{path}, {threads or ALL_CORES} thread(s): "
            f"{figures['images_per_s']:.1f} images/s", flush=True)
  text = report(rows, cores=cores, step_images_per_s=_STEP_IMAGES_PER_S.value,
                devices_per_host=_DEVICES_PER_HOST.value)
  text += f"\n- load average after: {os.getloadavg()[0]:.2f}"
  print(text)
  if _OUTPUT.value:
    with open(_OUTPUT.value, "w") as f:
      f.write(text + "\n")


if __name__ == "__main__":
  app.run(main)
