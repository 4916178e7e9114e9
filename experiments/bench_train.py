# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
r"""Training throughput of a train step vs this machine's matmul rate.

Builds the model of a reconstruction or masked config (--config, default
configs/reconstruct.py, with --config.KEY overrides), times the pmap-ed
train step on random batches of the global batch size, and times a square
float32 matmul in the same run. Prints images/s, the step's FLOPs, the
achieved GFLOP/s and its fraction of the matmul rate. XLA's cost analysis
counts the body of a loop once, so the unroll's FLOPs are counted
analytically (:func:`unroll_flops`) and added to XLA's count of the rest.
Example:

  python3 -m experiments.bench_train --config.decoder=finola --repeats=10
"""

import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app
from absl import flags

from experiments import reconstruct
from finola_jax import tasks
from finola_jax.models import encoders
from finola_jax.models import layers
from finola_jax.runner import launch
from finola_jax.train import step as step_lib

FLAGS = flags.FLAGS


def define_flags(flag_values: flags.FlagValues = FLAGS, sys_argv=None) -> None:
  launch.define_config_flag(reconstruct.DEFAULT_CONFIG, flag_values, sys_argv)
  flags.DEFINE_integer("repeats", 20, "Timed steps (median).",
                       flag_values=flag_values)
  flags.DEFINE_integer("matmul_size", 1024, "Side of the square reference "
                       "matmul.", flag_values=flag_values)


def median_seconds(fn, repeats: int) -> float:
  """Median wall time of ``fn()`` (which must block) after one warm-up."""
  fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def step_flops(task, state, batch) -> float:
  """XLA's FLOP count of one device's loss + gradient computation."""
  keys = jax.random.split(jax.random.PRNGKey(0), batch["image"].shape[0])
  grad_fn = jax.jit(jax.value_and_grad(task.loss, has_aux=True))
  analysis = grad_fn.lower(state.params, batch, keys).compile().cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0]
  return float(analysis["flops"])


def unroll_flops(config) -> float:
  """Matmul FLOPs of the unroll in one image's forward and backward pass.

  Each position a walk fills costs one ``C×C`` matvec, ``2·C²`` FLOPs, per
  FINOLA path (``config.paths``): ``h·w − 1`` positions from the centre,
  ``h·w − (h/2)·(w/2)`` around a quadrant (the masked task's quadrant
  masking); ``average`` runs both walk orders. The backward costs two
  matvecs per position (the state's and the matrix's cotangents): ``3×``
  the forward in all.
  """
  if config.get("decoder") == "dense":
    return 0.0
  side = config.image_size // config.stride
  positions = side**2 - 1
  if config.task == "masked" and config.masking == "quadrant":
    positions = side**2 - (side // 2)**2
  walks = 2 if config.path == "average" else 1
  paths = layers.multipath(config)[0]
  return 3 * walks * paths * positions * 2.0 * config.channels**2


def main(argv):
  del argv
  config = FLAGS.config
  task = tasks.create_task(config)
  devices = jax.local_device_count()
  per_device = config.batch_size // devices
  size = config.image_size
  rng = np.random.default_rng(0)
  batch = {"image": rng.uniform(
      size=(devices, per_device, size, size, 3)).astype(np.float32)}
  state = step_lib.create_train_state(task, config)
  xla_flops = step_flops(task, state, {"image": batch["image"][0]}) * devices
  walk_flops = unroll_flops(config) * config.batch_size
  flops = xla_flops + walk_flops
  steps = step_lib.ParallelSteps(task, config.seed)
  replicated = [steps.replicate(state)]

  def train_once():
    replicated[0], metrics = steps.train(replicated[0], batch)
    jax.block_until_ready(metrics)

  n = FLAGS.matmul_size
  a = jnp.asarray(rng.standard_normal((n, n)), jnp.float32)
  matmul = jax.jit(lambda x: x @ x)
  step_s = median_seconds(train_once, FLAGS.repeats)
  matmul_s = median_seconds(lambda: matmul(a).block_until_ready(), FLAGS.repeats)
  step_rate = flops / step_s / 1e9
  matmul_rate = 2 * n**3 / matmul_s / 1e9
  model = config.get("decoder", config.task)
  print(f"| model | encoder | stride | C | batch | images/s | step ms | "
        f"GFLOP/step | of which unroll | GFLOP/s | matmul GFLOP/s | "
        f"fraction |\n"
        f"|---|---|---|---|---|---|---|---|---|---|---|---|\n"
        f"| {model} | {encoders.encoder_name(config)} | {config.stride} | "
        f"{config.channels} | "
        f"{config.batch_size} | {config.batch_size / step_s:.1f} | "
        f"{1e3 * step_s:.1f} | {flops / 1e9:.2f} | {walk_flops / flops:.0%} | "
        f"{step_rate:.1f} | {matmul_rate:.1f} | {step_rate / matmul_rate:.2f} |")
  print(f"({devices} device(s), {jax.devices()[0].platform}, precision "
        f"{config.precision})")


if __name__ == "__main__":
  define_flags()
  app.run(main)
