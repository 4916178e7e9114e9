# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""MULTI-PROCESS (multi-host style) data parallelism, on localhost CPUs.

What a TPU pod or a GPU cluster does with one process per host, here with
2 processes × 2 forced CPU devices talking over gloo on 127.0.0.1:
``python3 -m experiments.reconstruct --coordinator_address=127.0.0.1:PORT
--num_processes=2 --process_id=i`` trains a tiny model for 3 steps, and

* its final parameters (read back from the orbax checkpoint) equal those of
  1 process × 4 devices and of 1 process × 1 device on the same global
  batch: gradients are averaged over all processes, not per process;
* its evaluation equals theirs: the eval sums are psum-ed over every device
  of every process (each process holds a different share of the images);
* only process 0 writes summaries, ``metrics.jsonl`` and images;
* resuming a 2-process run from its step-2 checkpoint (orbax, written with
  every process taking part) ends at the uninterrupted run's parameters.

The six processes (2×2, 1×4 and 1×1 at once, then the resumed 2×2) use
about 3.5 CPU-minutes: roughly 2 minutes on 2 otherwise idle cores, more on
a busy machine; ``-k "not resumed"`` leaves out the last two.
Every process is started by this file, waited for with a timeout (all runs
together: TIMEOUT_S) and killed on failure. The runs use
``--xla_backend_optimization_level=0``: it cuts XLA's CPU compile time
several-fold and applies to every run compared alike; they share the
session's compilation cache (conftest.py).
"""

import os
import re
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from finola_jax.train import checkpointing
from tests import helpers

LEARNING_RATE = 2e-3
TIMEOUT_S = 900  # for all the runs of this file together (a loaded machine)
TINY_FLAGS = [
    "--config.image_size=16", "--config.stride=4", "--config.channels=8",
    "--config.encoder_width=4", "--config.encoder_depth=2",
    "--config.decoder_width=8", "--config.batch_size=8", "--config.steps=3",
    "--config.checkpoint_every=2", "--config.eval_every=3",
    "--config.log_every=1", f"--config.learning_rate={LEARNING_RATE}",
    "--config.warmup_steps=2",
    # A and B at the small normal start: the main job's skew start at scale
    # 1 amplifies the rounding noise below (the runs sum gradients in other
    # orders) past NOISE_ATOL in a few cancelled biases; what this file
    # tests, the data-parallel plumbing, does not depend on the start.
    "--config.matrix_init=normal", "--config.matrix_init_scale=0.1",
]
RTOL, ATOL = 1e-4, 1e-5
# Adam divides each gradient by its RMS: a parameter whose gradient is zero
# up to float rounding (a convolution bias that the next group normalization
# cancels) moves by up to ~learning_rate * noise / eps, so two runs that sum
# gradients in different orders may differ there well above ATOL. A few
# elements may do so, each by at most a twentieth of the learning rate; a
# real difference (gradients not averaged over processes, a wrong batch
# split) moves nearly all parameters by ~learning_rate.
NOISE_ATOL = LEARNING_RATE / 20
NOISE_FRACTION = 0.01


def _free_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _env(devices: int) -> dict:
  """conftest's environment (compilation cache) with ``devices``, compiling
  quickly (see the module doc)."""
  env = helpers.program_env()
  env["XLA_FLAGS"] = " ".join(
      [f for f in env["XLA_FLAGS"].split()
       if not f.startswith("--xla_force_host_platform_device_count")] +
      [f"--xla_force_host_platform_device_count={devices}",
       "--xla_backend_optimization_level=0"])
  return env


class Run:
  """One training program over ``processes`` × ``devices`` CPU devices."""

  def __init__(self, name: str, root: str, processes: int, devices: int,
               module: str = "experiments.reconstruct", workdir=None):
    self.name, self.processes = name, processes
    self.workdir = workdir or os.path.join(root, name)
    self.logs = [os.path.join(root, f"{name}.{i}.log") for i in range(processes)]
    command = [sys.executable, "-m", module, f"--workdir={self.workdir}",
               *TINY_FLAGS]
    if processes > 1:
      command += [f"--coordinator_address=127.0.0.1:{_free_port()}",
                  f"--num_processes={processes}"]
    self.procs = []
    env = _env(devices)
    try:
      for i, log in enumerate(self.logs):
        flags = [f"--process_id={i}"] if processes > 1 else []
        with open(log, "w") as f:
          self.procs.append(subprocess.Popen(
              command + flags, cwd=helpers.REPO_ROOT, env=env, stdout=f,
              stderr=subprocess.STDOUT))
    except BaseException:
      self.kill()
      raise

  def wait(self, deadline: float) -> None:
    """Waits for every process; on a failure or timeout shows the logs."""
    for proc in self.procs:
      try:
        proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
      except subprocess.TimeoutExpired:
        self.kill()
        pytest.fail(f"{self.name}: timed out.\n{self.tails()}")
    if any(p.returncode for p in self.procs):
      self.kill()
      codes = [p.returncode for p in self.procs]
      pytest.fail(f"{self.name}: exit codes {codes}.\n{self.tails()}")

  def kill(self) -> None:
    for proc in self.procs:
      if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=30)

  def log(self, i: int) -> str:
    with open(self.logs[i]) as f:
      return f.read()

  def tails(self, lines: int = 40) -> str:
    """The last lines of each log that are not absl INFO lines."""
    def tail(text):
      kept = [l[:300] for l in text.splitlines()
              if l.strip() and not re.match(r"I\d{4} ", l)]
      return "\n".join(kept[-lines:])
    return "\n".join(f"--- {self.name} process {i} ---\n{tail(self.log(i))}"
                     for i in range(self.processes))

  def params(self):
    return checkpointing.restore_latest_params(self.workdir)

  def metrics(self):
    return helpers.read_metrics(self.workdir)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
  return str(tmp_path_factory.mktemp("multiprocess"))


@pytest.fixture(scope="module")
def deadline():
  return time.monotonic() + TIMEOUT_S


def _run_all(specs, deadline):
  """Starts a ``Run`` per ``(args, kwargs)``, all at once; waits for all."""
  started = []
  try:
    for args, kwargs in specs:
      started.append(Run(*args, **kwargs))
    for run in started:
      run.wait(deadline)
  finally:
    for run in started:
      run.kill()
  return {run.name: run for run in started}


@pytest.fixture(scope="module")
def runs(root, deadline):
  """2 processes × 2 devices, 1 × 4 and 1 × 1, at the same time."""
  return _run_all([(("2x2", root, 2, 2), {}), (("1x4", root, 1, 4), {}),
                   (("1x1", root, 1, 1), {})], deadline)


@pytest.fixture(scope="module")
def resumed(root, deadline, runs):
  """The 2×2 run again, from a copy of its workdir without the last step."""
  workdir = os.path.join(root, "2x2_resumed")
  shutil.copytree(runs["2x2"].workdir, workdir)
  shutil.rmtree(os.path.join(checkpointing.checkpoint_dir(workdir), "3"))
  return _run_all([(("2x2_resumed", root, 2, 2), {"workdir": workdir})],
                  deadline)["2x2_resumed"]


def _assert_params_close(actual, expected, what):
  """Equal within float tolerance, up to Adam-amplified rounding noise."""
  import jax  # pylint: disable=g-import-not-at-top
  paths = jax.tree_util.tree_leaves_with_path(expected)
  leaves = jax.tree_util.tree_leaves(actual)
  assert len(leaves) == len(paths), what
  mismatched = total = 0
  for (path, want), got in zip(paths, leaves):
    np.testing.assert_allclose(
        got, want, rtol=0, atol=NOISE_ATOL,
        err_msg=f"{what}: {jax.tree_util.keystr(path)}")
    mismatched += np.sum(~np.isclose(got, want, rtol=RTOL, atol=ATOL))
    total += np.size(want)
  assert mismatched <= NOISE_FRACTION * total, (
      f"{what}: {mismatched} of {total} parameters differ by more than "
      f"rtol={RTOL}, atol={ATOL}")


def test_two_processes_train_like_one_process(runs):
  step, params = runs["2x2"].params()
  assert step == 3
  for name in ("1x4", "1x1"):
    other_step, other = runs[name].params()
    assert other_step == 3
    _assert_params_close(params, other, f"2x2 vs {name}")


def test_training_and_eval_metrics_match_one_process(runs):
  def by_step(run):
    records = {}
    for record in run.metrics():
      records.setdefault(record["step"], {}).update(record)
    return records

  two, one = by_step(runs["2x2"]), by_step(runs["1x1"])
  # The loss of a step is the mean over the global batch: per process means
  # (no cross-process pmean) would differ from the first step on.
  for step in (1, 2, 3):
    np.testing.assert_allclose(two[step]["train/loss"], one[step]["train/loss"],
                               rtol=RTOL, atol=ATOL)
  for key in ("eval/psnr", "eval/ssim"):  # means over all 15 eval images
    np.testing.assert_allclose(two[3][key], one[3][key], rtol=RTOL, atol=ATOL)
  # Every process prints the same (global) evaluation.
  lines = [[l for l in runs["2x2"].log(i).splitlines()
            if l.startswith("Validation split")] for i in range(2)]
  assert lines[0] and lines[0] == lines[1]


def test_only_process_zero_writes_summaries_and_images(runs):
  workdir = runs["2x2"].workdir
  events = [f for f in os.listdir(workdir) if f.startswith("events.out.tfevents")]
  assert len(events) == 1, events
  steps = [r["step"] for r in runs["2x2"].metrics() if "train/loss" in r]
  assert steps == [1, 2, 3]  # once each: no second writer
  assert os.listdir(os.path.join(workdir, "images")) == ["eval_0000003.png"]
  assert sorted(os.listdir(checkpointing.checkpoint_dir(workdir))) == ["2", "3"]


def test_resumed_two_process_run_matches_uninterrupted(runs, resumed):
  # metrics.jsonl was copied with steps 1-3; the resumed run adds step 3 only.
  steps = [r["step"] for r in resumed.metrics() if "train/loss" in r]
  assert steps == [1, 2, 3, 3]
  step, params = resumed.params()
  assert step == 3
  _, uninterrupted = runs["2x2"].params()
  _assert_params_close(params, uninterrupted, "resumed vs uninterrupted")
