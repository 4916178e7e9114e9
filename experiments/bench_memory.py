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
"""

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


def main(argv):
  del argv
  config = FLAGS.config
  print(f"| per-device batch | arguments GiB | temp GiB | total GiB | "
        f"GiB per image |\n|---|---|---|---|---|")
  for per_device in map(int, FLAGS.batches):
    stats = train_step_memory(config, per_device)
    arguments = stats.argument_size_in_bytes / GIB
    temp = stats.temp_size_in_bytes / GIB
    print(f"| {per_device} | {arguments:.2f} | {temp:.2f} | "
          f"{arguments + temp:.2f} | {temp / per_device:.3f} |", flush=True)
  print(f"({jax.devices()[0].platform}, {config.image_size}², stride "
        f"{config.stride}, C={config.channels}, precision {config.precision}, "
        f"decoder {config.get('decoder', '-')}, encoder "
        f"{encoders.encoder_name(config)})")


if __name__ == "__main__":
  define_flags()
  app.run(main)
