# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
r"""Training throughput of the reconstruction step vs this machine's matmul rate.

Builds the same model as ``experiments.reconstruct`` (same flags), times the
pmap-ed train step on random batches of the global batch size, and times a
square float32 matmul in the same run. Prints images/s, the step's FLOPs
(XLA's cost analysis of one device's step), the achieved GFLOP/s and its
fraction of the matmul rate. Example:

  python -m experiments.bench_train --decoder=finola
"""

import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app
from absl import flags

from experiments import reconstruct
from finola_jax.train import trainer

flags.DEFINE_integer("repeats", 20, "Timed steps (median).")
flags.DEFINE_integer("matmul_size", 1024, "Side of the square reference matmul.")
FLAGS = flags.FLAGS
FLAGS.set_default("workdir", "unused")  # the benchmark writes nothing


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


def main(argv):
  del argv
  task = reconstruct.build_task()
  devices = jax.local_device_count()
  per_device = FLAGS.batch_size // devices
  size = FLAGS.image_size
  rng = np.random.default_rng(0)
  batch = {"image": rng.uniform(size=(devices, per_device, size, size, 3)).astype(np.float32)}
  config = reconstruct.launch.train_config()
  state = trainer.create_train_state(task, config, {"image": batch["image"][0]})
  flops = step_flops(task, state, {"image": batch["image"][0]}) * devices
  steps = trainer.ParallelSteps(task, config.seed)
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
  print(f"| decoder | stride | C | batch | images/s | step ms | GFLOP/step | "
        f"GFLOP/s | matmul GFLOP/s | fraction |\n|---|---|---|---|---|---|---|---|---|---|\n"
        f"| {FLAGS.decoder} | {FLAGS.stride} | {FLAGS.channels} | {FLAGS.batch_size} | "
        f"{FLAGS.batch_size / step_s:.1f} | {1e3 * step_s:.1f} | {flops / 1e9:.2f} | "
        f"{step_rate:.1f} | {matmul_rate:.1f} | {step_rate / matmul_rate:.2f} |")
  print(f"({devices} device(s), {jax.devices()[0].platform}, precision {FLAGS.precision})")


if __name__ == "__main__":
  app.run(main)
