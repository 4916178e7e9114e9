# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
r"""Sweep rows at the paper's map sizes on a bare accelerator image.

The unroll-length sweep (``experiments/sweep_unroll.py``) needs TensorFlow
for its input pipeline; an accelerator image may have none. This trains the
same rows (``sweep_rows.row_config``: stride 1, A and B scaled per side and
C) with ``train.step``'s pmapped step on the first device, and prints one
JSON line per row: validation PSNR at several steps against the mean
colour, max |z| of the validation maps at initialization and at the end,
whether every logged step was finite, and ms per step (its few evaluations
included).

Training crops are made in JAX with the tf.data pipeline's recipe (the
constants of ``finola_jax.data.preprocessing``), not its exact draws: the
embedded training photographs (``finola_jax.data.sources``, scikit-image)
stored with the shorter side 4·S (antialiased), random resized crops (area
0.08–1, aspect 3/4–4/3) with flips, bilinear, then a channel permutation and
gains in 0.7–1.3. Those modules import TensorFlow only when a function
needs it. The validation crops are the real pipeline's,
written beforehand on a machine with TensorFlow.

Usage (from the repository root)::

  # Here (TensorFlow): the 15 validation crops at each size.
  python3 -m tools.gpu_sweep_check \
    --write_validation=.gpu/data/validation.npz
  # There (no TensorFlow needed; ml_collections, dm-pix and scikit-image are):
  python3 tools/gpu_sweep_check.py OUT_DIR \
    --validation=.gpu/data/validation.npz \
    --rows=256:128:finola,256:128:linear,256:256:finola,256:256:linear

A row is ``C:SIDE:DECODER[:MATRIX_SCALE[:STEPS]]``; MATRIX_SCALE (default
--matrix_scale) is scaled by --reference_side / SIDE and
--reference_channels / C as in the sweep.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

if __package__ in (None, ""):  # Run as a file: the repository root's modules.
  sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                  os.pardir))

# pylint: disable=g-import-not-at-top
from experiments import sweep_rows
from experiments.configs import reconstruct as reconstruct_config
from finola_jax import tasks
from finola_jax.data import preprocessing
from finola_jax.data import sources
from finola_jax.models import autoencoder
from finola_jax.tasks import reconstruction
from finola_jax.train import step as step_lib
# pylint: enable=g-import-not-at-top

EVAL_AT = (100, 200, 500, 1000, 2000)


def log(*parts):
  print(f"[{time.strftime('%H:%M:%S')}]", *parts, flush=True)


def stored_canvas(photos, size: int):
  """Photos resized (shorter side 4·size), padded: ``[N, H, W, 3]``, h, w."""
  resized = []
  for image in photos:
    scale = (preprocessing.IN_MEMORY_STORED_SIZE_FACTOR * size
             / min(image.shape[:2]))
    shape = (max(1, round(image.shape[0] * scale)),
             max(1, round(image.shape[1] * scale)), 3)
    resized.append(jax.image.resize(jnp.asarray(image, jnp.float32), shape,
                                    "linear", antialias=True))
  height = max(r.shape[0] for r in resized)
  width = max(r.shape[1] for r in resized)
  canvas = jnp.stack([jnp.pad(r, ((0, height - r.shape[0]),
                                  (0, width - r.shape[1]), (0, 0)))
                      for r in resized]) / 255.0
  return (canvas, jnp.array([r.shape[0] for r in resized], jnp.float32),
          jnp.array([r.shape[1] for r in resized], jnp.float32))


def make_batch_fn(canvas, heights, widths, batch: int, size: int):
  """``key`` → ``{"image": [1, batch, size, size, 3]}`` random crops."""
  count = canvas.shape[0]
  log_low, log_high = (math.log(r)
                       for r in preprocessing.CROP_ASPECT_RATIO_RANGE)
  low_area, high_area = preprocessing.CROP_AREA_RANGE
  low_gain, high_gain = preprocessing.COLOUR_GAIN_RANGE
  permutations = jnp.asarray(preprocessing.CHANNEL_PERMUTATIONS)

  def crop(u):
    index = jnp.minimum((u[0] * count).astype(jnp.int32), count - 1)
    h, w = heights[index], widths[index]
    area = h * w * (low_area + (high_area - low_area) * u[1])
    ratio = jnp.exp(log_low + (log_high - log_low) * u[2])
    crop_w = jnp.minimum(jnp.sqrt(area * ratio), w)
    crop_h = jnp.minimum(jnp.sqrt(area / ratio), h)
    top, left = (h - crop_h) * u[3], (w - crop_w) * u[4]
    centres = jnp.arange(size) + 0.5
    ys = jnp.clip(top + centres * crop_h / size - 0.5, 0, h - 1)
    xs = jnp.clip(left + centres * crop_w / size - 0.5, 0, w - 1)
    xs = jnp.where(u[5] < 0.5, xs[::-1], xs)
    image = canvas[index]
    y0, x0 = jnp.floor(ys).astype(jnp.int32), jnp.floor(xs).astype(jnp.int32)
    y1 = jnp.minimum(y0 + 1, canvas.shape[1] - 1)
    x1 = jnp.minimum(x0 + 1, canvas.shape[2] - 1)
    wy, wx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    upper = image[y0][:, x0] * (1 - wx) + image[y0][:, x1] * wx
    lower = image[y1][:, x0] * (1 - wx) + image[y1][:, x1] * wx
    pixels = upper * (1 - wy) + lower * wy
    choice = jnp.minimum((u[6] * len(permutations)).astype(jnp.int32),
                         len(permutations) - 1)
    gains = low_gain + (high_gain - low_gain) * u[7:10]
    return jnp.clip(pixels[..., permutations[choice]] * gains, 0.0, 1.0)

  @jax.jit
  def make(key):
    return {"image": jax.vmap(crop)(jax.random.uniform(key, (batch, 10)))[None]}

  return make


def row_config(args, decoder: str, size: int, channels: int,
               matrix_scale: float, steps: int):
  """The main job's config with this run's settings, as the sweep's row."""
  config = reconstruct_config.get_config()
  # The settings the sweep's GPU table was measured with.
  config.update(reconstruct_config.BEFORE_STUDY)
  config.steps, config.batch_size = steps, args.batch
  config.warmup_steps = args.warmup
  config.matrix_learning_rate_scale = matrix_scale
  return sweep_rows.row_config(config, decoder, size, channels,
                               args.reference_side, args.reference_channels)


def run_row(args, config, canvas, validation_images, deadline: float):
  """Trains one row on the first device; returns its JSON row.

  The row stops early (``stopped_at_step``) at ``deadline``
  (``time.monotonic()``) or after ``args.row_budget_s`` of training.
  """
  task = tasks.create_task(config)
  steps = step_lib.ParallelSteps(task, config.seed,
                                 devices=jax.local_devices()[:1])
  state = steps.replicate(step_lib.create_train_state(task, config))
  make_batch = make_batch_fn(*canvas, config.batch_size, config.image_size)
  images = jnp.asarray(validation_images, jnp.float32) / 255.0
  count = images.shape[0]
  eval_batch = {"image": images[None], "index": jnp.arange(count)[None],
                "mask": jnp.ones((1, count), jnp.float32)}

  def evaluate():
    sums = jax.device_get(steps.eval(state.params, eval_batch))
    return round(float(sums["psnr"][0] / sums["count"][0]), 2)

  def max_abs_z():
    return sweep_rows.max_abs_map(
        config, jax.tree_util.tree_map(lambda x: x[0], state.params), images)

  mean_colour = reconstruction.mean_colour_scores(np.asarray(images))["psnr"]
  row = dict(decoder=config.decoder, size=config.image_size,
             channels=config.channels, steps=config.steps,
             batch=config.batch_size,
             matrix_lr_scale=config.matrix_learning_rate_scale,
             matrix_init_scale=config.matrix_init_scale,
             mean_colour_psnr=round(mean_colour, 2),
             max_abs_z_init=max_abs_z(), psnr={0: evaluate()}, train_mse={})
  eval_at = {s for s in EVAL_AT if s < config.steps} | {config.steps}
  finite, done = True, config.steps
  key = jax.random.PRNGKey(config.seed + 1)
  started = time.monotonic()
  for i in range(1, config.steps + 1):
    state, metrics = steps.train(state, make_batch(jax.random.fold_in(key, i)))
    if i == 1:
      jax.block_until_ready(metrics)
      row["compile_and_first_step_s"] = round(time.monotonic() - started, 1)
      timed_from = time.monotonic()
    out_of_time = (time.monotonic() > deadline
                   or time.monotonic() - started > args.row_budget_s)
    if i % 100 == 0 or i in eval_at or out_of_time:
      metrics = jax.device_get(metrics)
      finite &= bool(metrics["finite"][0] > 0)
      row["train_mse"][i] = round(float(metrics["mse"][0]), 5)
    if i in eval_at or out_of_time:
      row["psnr"][i] = evaluate()
      log(config.decoder, config.image_size, config.channels, "step", i,
          "val psnr", row["psnr"][i], "train mse", row["train_mse"][i])
    if out_of_time:
      row["stopped_at_step"] = done = i
      break
  jax.block_until_ready(state)
  row["step_ms"] = round(1e3 * (time.monotonic() - timed_from)
                         / max(done - 1, 1), 2)
  row.update(finite=finite, max_abs_z_end=max_abs_z(),
             final_psnr=row["psnr"][done])
  row["beats_mean_colour"] = row["final_psnr"] > mean_colour
  return row


def parse_rows(text: str, args):
  """``C:SIDE:DECODER[:MATRIX_SCALE[:STEPS]]``, comma-separated."""
  rows = []
  for spec in text.split(","):
    parts = spec.split(":")
    if not 3 <= len(parts) <= 5:
      raise ValueError(f"Row {spec!r}: expected C:SIDE:DECODER"
                       "[:MATRIX_SCALE[:STEPS]].")
    if parts[2] not in autoencoder.DECODERS:
      raise ValueError(f"Row {spec!r}: decoder {parts[2]!r} is not one of "
                       f"{autoencoder.DECODERS}.")
    rows.append((int(parts[0]), int(parts[1]), parts[2],
                 float(parts[3]) if len(parts) > 3 else args.matrix_scale,
                 int(parts[4]) if len(parts) > 4 else args.steps))
  return rows


def write_validation(path: str, sizes) -> None:
  """The validation split's 15 crops at each size (needs TensorFlow)."""
  photos = [sources.embedded_photo(name)
            for name in sources.EMBEDDED_VALIDATION_PHOTOS]
  crops = {f"val{size}": np.round(255 * np.concatenate([
      preprocessing.centre_and_quadrant_crops(image, size)
      for image in photos])).astype(np.uint8) for size in sizes}
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  np.savez_compressed(path, **crops)
  print(f"Wrote {path}: "
        + ", ".join(f"{key} {value.shape}" for key, value in crops.items()))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("out", nargs="?", help="Writes sweep_check.json here.")
  parser.add_argument("--validation", default=".gpu/data/validation.npz")
  parser.add_argument("--write_validation", default=None,
                      help="Write the validation crops here and stop.")
  parser.add_argument("--sizes", default="32,64,128,256",
                      help="Sizes for --write_validation.")
  parser.add_argument("--rows", default="256:128:finola,256:128:linear,"
                      "256:256:finola,256:256:linear,128:128:finola,"
                      "128:128:linear,256:64:finola,256:64:linear")
  parser.add_argument("--steps", type=int, default=1000)
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--warmup", type=int, default=50)
  parser.add_argument("--matrix_scale", type=float, default=0.25)
  parser.add_argument("--reference_side", type=int, default=16)
  parser.add_argument("--reference_channels", type=int, default=128)
  parser.add_argument("--budget_s", type=float, default=460,
                      help="No row starts, and a running row stops, this "
                      "long after the start.")
  parser.add_argument("--row_budget_s", type=float, default=120,
                      help="A row stops training after this.")
  args = parser.parse_args(argv)
  deadline = time.monotonic() + args.budget_s
  if args.write_validation:
    write_validation(args.write_validation,
                     [int(s) for s in args.sizes.split(",")])
    return
  if not args.out:
    parser.error("OUT_DIR is required unless --write_validation is given.")
  try:
    rows = parse_rows(args.rows, args)
  except ValueError as error:
    parser.error(str(error))
  if not os.path.isfile(args.validation):
    parser.error(f"--validation={args.validation} is not a file: write it "
                 "with --write_validation (where TensorFlow is installed).")
  validation = np.load(args.validation)
  missing = sorted({f"val{size}" for _, size, *_ in rows} - set(validation))
  if missing:
    parser.error(f"{args.validation} has no {', '.join(missing)}: write it "
                 "with --write_validation and --sizes.")
  os.makedirs(args.out, exist_ok=True)
  device = jax.devices()[0]
  log("device", device.device_kind, "jax", jax.__version__)
  photos = [sources.embedded_photo(name)
            for name in sources.EMBEDDED_TRAIN_PHOTOS]
  canvases, results = {}, []
  for channels, size, decoder, matrix_scale, steps in rows:
    if time.monotonic() > deadline:
      log("budget spent: skipping", channels, size, decoder)
      continue
    if size not in canvases:
      canvases[size] = stored_canvas(photos, size)
    config = row_config(args, decoder, size, channels, matrix_scale, steps)
    row = run_row(args, config, canvases[size], validation[f"val{size}"],
                  deadline)
    row["device"] = device.device_kind
    results.append(row)
    print(json.dumps(row), flush=True)
    with open(os.path.join(args.out, "sweep_check.json"), "w") as f:
      json.dump(results, f, indent=1)


if __name__ == "__main__":
  main()
