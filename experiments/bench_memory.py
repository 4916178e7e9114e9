# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
r"""Device memory of a config's train step, from XLA's analysis: nothing runs.

Compiles the pmap-ed train step of any training config (--config, with
--config.KEY overrides) for one device on this machine's backend, at each
per-device batch of --batches, and prints XLA's memory analysis: the
arguments (train state and batch), the temporaries, their sum and GiB per
image. Nothing is initialized or computed (the state's shapes come from
``jax.eval_shape``), so a CPU plans the batch of a 16, 32 or 80 GiB chip:

  python3 -m experiments.bench_memory \
    --config=experiments/configs/reconstruct_imagenet256.py --batches=8,32

CPU figures are an upper bound: on an H100, XLA's temp for the same step
was about two thirds of the CPU's (README, "Memory").

With --decoder_chunks it picks ``decoder_chunk`` for a memory budget
(--memory_gib, else the device's own limit where it reports one): at each
batch it compiles the candidates from the fastest down, 0 (the whole batch
at once, no recomputation) and then the largest chunks (fewest loop
iterations), and recommends the first whose arguments and temporaries fit:

  python3 -m experiments.bench_memory \
    --config=experiments/configs/reconstruct_imagenet256.py --batches=32 \
    --decoder_chunks=0,8,4,2,1 --memory_gib=80
"""

import functools
import os

import jax
import numpy as np
from absl import app
from absl import flags
from ml_collections import config_flags

from finola_jax import tasks
from finola_jax.models import encoders
from finola_jax.train import step as step_lib

FLAGS = flags.FLAGS
GIB = 2.0**30
# Not through finola_jax.runner.launch: this program needs no input pipeline,
# so it runs where TensorFlow is not installed (e.g. a bare GPU image).
DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                              "configs", "reconstruct.py")


def define_flags(flag_values: flags.FlagValues = FLAGS, sys_argv=None) -> None:
  config_flags.DEFINE_config_file(
      "config", DEFAULT_CONFIG, "Training config file (experiments/configs/); "
      "override fields with --config.KEY=VALUE.", flag_values=flag_values,
      sys_argv=sys_argv)
  flags.DEFINE_list("batches", ["8", "32"], "Per-device batch sizes.",
                    flag_values=flag_values)
  flags.DEFINE_list(
      "decoder_chunks", [], "decoder_chunk candidates to compile at each "
      "batch, best first once ordered (0, then the largest); empty: the "
      "config's own.", flag_values=flag_values)
  flags.DEFINE_float(
      "memory_gib", None, "Memory budget per device (GiB) for recommending "
      "a decoder_chunk; default: the device's own limit, where it reports "
      "one.", flag_values=flag_values)


def train_step_memory(config, per_device: int):
  """XLA's ``CompiledMemoryStats`` of one device's train step at a batch."""
  task = tasks.create_task(config)
  state = step_lib.abstract_train_state(task, config)
  steps = step_lib.ParallelSteps(task, config.seed,
                                 devices=jax.local_devices()[:1])
  one_device = lambda x: jax.ShapeDtypeStruct((1,) + x.shape, x.dtype)
  size = config.image_size
  batch = {"image": jax.ShapeDtypeStruct((1, per_device, size, size, 3),
                                         np.float32)}
  lowered = steps.train.lower(jax.tree_util.tree_map(one_device, state), batch)
  return lowered.compile().memory_analysis()


def fastest_first(chunks) -> list:
  """``decoder_chunk`` candidates ordered by speed: 0 (no recomputation),
  then the largest chunks (fewest iterations of the decoding loop)."""
  return sorted(set(chunks), key=lambda chunk: (chunk != 0, -chunk))


def device_memory_bytes():
  """The default device's memory limit in bytes, or None if not reported."""
  stats = jax.local_devices()[0].memory_stats()
  return (stats or {}).get("bytes_limit")


def pick_decoder_chunk(config, per_device: int, chunks, budget_bytes: float,
                       report=lambda chunk, stats: None):
  """The fastest ``decoder_chunk`` whose step fits ``budget_bytes``.

  Compiles the candidates fastest first (:func:`fastest_first`), calling
  ``report(chunk, stats)`` for each, and stops at the first whose arguments
  and temporaries fit. Returns that chunk, or None if none fits.
  """
  for chunk in fastest_first(chunks):
    trial = config.copy_and_resolve_references()
    trial.decoder_chunk = chunk
    stats = train_step_memory(trial, per_device)
    report(chunk, stats)
    if stats.argument_size_in_bytes + stats.temp_size_in_bytes <= budget_bytes:
      return chunk
  return None


def main(argv):
  del argv
  config = FLAGS.config
  if not all(chunk.isdigit() for chunk in FLAGS.decoder_chunks):
    raise app.UsageError("--decoder_chunks must be integers >= 0, got "
                         f"{','.join(FLAGS.decoder_chunks)}.")
  chunks = [int(chunk) for chunk in FLAGS.decoder_chunks]
  budget = (FLAGS.memory_gib * GIB if FLAGS.memory_gib is not None
            else device_memory_bytes())
  if chunks and budget is None:
    raise app.UsageError(
        f"--decoder_chunks needs a budget: this {jax.devices()[0].platform} "
        "device reports no memory limit; give --memory_gib.")

  def report(per_device, chunk, stats):
    arguments = stats.argument_size_in_bytes / GIB
    temp = stats.temp_size_in_bytes / GIB
    print(f"| {per_device} | {chunk} | {arguments:.2f} | {temp:.2f} | "
          f"{arguments + temp:.2f} | {temp / per_device:.3f} |", flush=True)

  print("| per-device batch | decoder_chunk | arguments GiB | temp GiB | "
        "total GiB | GiB per image |\n|---|---|---|---|---|---|")
  picks = {}
  for per_device in map(int, FLAGS.batches):
    if chunks:
      picks[per_device] = pick_decoder_chunk(
          config, per_device, chunks, budget,
          report=functools.partial(report, per_device))
    else:
      report(per_device, config.decoder_chunk,
             train_step_memory(config, per_device))
  print(f"({jax.devices()[0].platform}, {config.image_size}², stride "
        f"{config.stride}, C={config.channels}, precision {config.precision}, "
        f"decoder {config.get('decoder', '-')}, encoder "
        f"{encoders.encoder_name(config)})")
  for per_device, chunk in picks.items():
    if chunk is None:
      print(f"batch {per_device}: no decoder_chunk of {chunks} fits "
            f"{budget / GIB:.1f} GiB.")
    else:
      print(f"batch {per_device}: --config.decoder_chunk={chunk} (the "
            f"fastest that fits {budget / GIB:.1f} GiB).")


if __name__ == "__main__":
  define_flags()
  app.run(main)
