"""Shared helpers of the trainer and program tests.

* Tiny models, tasks and flags (16×16 images, 8 channels): every test trains
  the same few shapes, so compiled programs are reused.
* ``ProgramPool`` (fixture ``programs``): runs ``experiments/*`` programs in
  worker subprocesses, one per program, kept for the session (those of all
  collected test modules, see ``uses_program``, start together). A program
  defines its flags on absl's global ``FLAGS``, so two programs cannot live
  in one process; a worker imports its program once and runs many command
  lines through ``FLAGS(argv)`` + the program's ``main`` under ``flagsaver``
  (``python -m tests.helpers serve PROGRAM MOCK_DIR``). Workers mock TFDS
  (``tfds.testing.mock_data``), so ``--dataset=cifar10`` reads random
  examples from metadata written by ``write_tfds_metadata``.
* ``check_kill_and_resume``: SIGKILLs a real ``python -m experiments.X`` run
  after its first checkpoint, restarts it and checks that it resumed and
  finished where an uninterrupted run does.
* ``persistent_compilation_cache`` / fixture ``compilation_cache``: runs of
  the same settings in one test process load their compiled steps.

Subprocesses share a persistent JAX compilation cache and compile with
``--xla_backend_optimization_level=0``: same programs, a fraction of the
compile time of this 2-core machine.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import json
import logging
import os
import re
import select
import signal
import subprocess
import sys
import time
import traceback
from typing import Any, Dict, Iterator, List, Sequence

import chex
import jax
import numpy as np
import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))



class NoX64LeakTestCase(chex.TestCase):
  """Checks that no test leaks jax_enable_x64 into or out of itself."""

  def setUp(self):
    super().setUp()
    assert not jax.config.jax_enable_x64, "x64 leaked into this test"

  def tearDown(self):
    assert not jax.config.jax_enable_x64, "x64 leaked out of this test"
    super().tearDown()


# ------------------------------------------------------------ tiny settings ---

# A model every program accepts (pretrain_masked: image_size divisible by
# 2·stride, encoder_depth >= log2(stride)).
TINY_MODEL = dict(image_size=16, stride=2, channels=8, encoder_width=4,
                  encoder_depth=1, decoder_width=8)
BATCH_SIZE = 4  # Divisible by the 4 forced CPU devices (tests/conftest.py).
# Program runs: the same optimizer settings everywhere, so their compiled
# steps are shared through the persistent cache; enough steps after the
# first checkpoint to kill a run in the middle.
STEPS = 12
CHECKPOINT_EVERY = 4

# TFDS datasets the workers mock (name: its validation split) and the number
# of examples every mocked split yields.
MOCK_DATASETS = {"cifar10": "test"}
NUM_MOCK_EXAMPLES = 6


def tiny_flags(**overrides: Any) -> List[str]:
  """Command-line flags of a tiny, short training run."""
  values = dict(TINY_MODEL, batch_size=BATCH_SIZE, steps=STEPS, warmup_steps=1,
                log_every=1, eval_every=1000, checkpoint_every=CHECKPOINT_EVERY)
  values.update(overrides)
  return [f"--{name}={value}" for name, value in values.items()]


def reconstruction_task(**overrides):
  from finola_jax.models import autoencoder
  from finola_jax.tasks import reconstruction
  return reconstruction.ReconstructionTask(
      autoencoder.Autoencoder(**dict(TINY_MODEL, **overrides)))


def masked_task(masking: str = "quadrant", *, norm_pix_loss: bool = False,
                patch_size: int = 4, **overrides):
  from finola_jax.models import masked
  from finola_jax.tasks import masked as masked_tasks
  model = masked.MaskedFinola(masking=masking, **dict(TINY_MODEL, **overrides))
  return masked_tasks.MaskedTask(model, norm_pix_loss=norm_pix_loss,
                                 patch_size=patch_size)


@functools.lru_cache(maxsize=None)
def initial_params(task):
  """``task``'s initial parameters (seed 0) for a batch of one tiny image."""
  import jax
  image = np.zeros((1, TINY_MODEL["image_size"], TINY_MODEL["image_size"], 3),
                   np.float32)
  return jax.jit(task.init_params)(jax.random.PRNGKey(0), {"image": image})


def train_config(workdir: str, **overrides):
  from finola_jax.train import trainer
  values = dict(workdir=str(workdir), steps=6, batch_size=BATCH_SIZE,
                learning_rate=1e-2, warmup_steps=2, log_every=1,
                eval_every=1000, checkpoint_every=3, num_images=2)
  values.update(overrides)
  return trainer.TrainConfig(**values)


def embedded_batches(image_size: int = TINY_MODEL["image_size"]):
  """``(train_batches, eval_batches)`` of the embedded photos, as ``run`` has."""
  from finola_jax.data import input_pipeline

  def train_batches(start_step):
    return input_pipeline.create_train_iterator(
        input_pipeline.EMBEDDED, image_size=image_size,
        global_batch_size=BATCH_SIZE, seed=0, start_step=start_step)

  def eval_batches():
    return input_pipeline.create_eval_iterator(
        input_pipeline.EMBEDDED, image_size=image_size,
        global_batch_size=BATCH_SIZE, max_examples=BATCH_SIZE)

  return train_batches, eval_batches


def checkpoint_steps(workdir: str) -> List[int]:
  """Steps of the finished checkpoints (orbax renames a finished one to its step)."""
  directory = os.path.join(str(workdir), "checkpoints")
  if not os.path.isdir(directory):
    return []
  return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


def read_metrics(workdir: str) -> List[Dict[str, Any]]:
  """``WORKDIR/metrics.jsonl``: checks every line is a JSON object with a step."""
  records = []
  with open(os.path.join(str(workdir), "metrics.jsonl")) as f:
    for line in f:
      record = json.loads(line)
      assert isinstance(record, dict) and isinstance(record["step"], int), line
      records.append(record)
  return records


def train_loss_steps(workdir: str) -> List[int]:
  """The steps of the training-loss lines of ``metrics.jsonl``, in file order."""
  return [r["step"] for r in read_metrics(workdir) if "train/loss" in r]


def assert_trees_equal(actual, expected, **tolerance) -> None:
  """Same structure; leaves equal (exactly, or ``assert_allclose(**tolerance)``)."""
  import jax
  actual_leaves, actual_tree = jax.tree_util.tree_flatten(actual)
  expected_leaves, expected_tree = jax.tree_util.tree_flatten(expected)
  assert actual_tree == expected_tree
  for a, e in zip(actual_leaves, expected_leaves):
    if tolerance:
      np.testing.assert_allclose(np.asarray(a), np.asarray(e), **tolerance)
    else:
      np.testing.assert_array_equal(np.asarray(a), np.asarray(e))


# ------------------------------------------------------------------- images ---


def write_png(path: str, image: np.ndarray) -> None:
  from PIL import Image
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(np.asarray(image, np.uint8)).save(path)


def write_photo_folder(directory: str, count: int, seed: int = 0) -> str:
  """``count`` smooth random colour PNGs of varied sizes; returns ``directory``."""
  rng = np.random.default_rng(seed)
  for i in range(count):
    height, width = 20 + 2 * i, 28 - i
    ramp = np.linspace(0, 1, width)[None, :, None] * rng.uniform(0, 255, 3)
    noise = rng.uniform(0, 40, (height, width, 3))
    write_png(os.path.join(directory, f"photo{i:02d}.png"),
              np.clip(ramp + noise, 0, 255))
  return directory


def write_labeled_folder(directory: str, per_class: int = 5) -> str:
  """Class subfolders ``dark`` and ``light`` of noisy grey PNGs."""
  rng = np.random.default_rng(1)
  for name, level in (("dark", 50), ("light", 200)):
    for i in range(per_class):
      image = level + rng.uniform(-30, 30, (18, 18, 3))
      write_png(os.path.join(directory, name, f"{i}.png"), np.clip(image, 0, 255))
  return directory


# --------------------------------------------------------------------- TFDS ---


def write_tfds_metadata(data_dir: str, datasets: Dict[str, str] = MOCK_DATASETS,
                        num_examples: int = NUM_MOCK_EXAMPLES) -> str:
  """TFDS metadata with each dataset's real split names ("train" and its
  validation split), so ``tfds.testing.mock_data`` knows the splits."""
  import tensorflow_datasets as tfds
  for name, validation in datasets.items():
    builder = tfds.builder(name, data_dir=data_dir)
    if os.path.isdir(builder.data_dir):
      continue
    builder.info.set_splits(tfds.core.SplitDict([
        tfds.core.SplitInfo(name=split, shard_lengths=[num_examples],
                            num_bytes=0) for split in ("train", validation)]))
    os.makedirs(builder.data_dir)
    builder.info.write_to_directory(builder.data_dir)
  return data_dir


@contextlib.contextmanager
def mock_tfds(data_dir: str,
              num_examples: int = NUM_MOCK_EXAMPLES) -> Iterator[str]:
  """TFDS yields ``num_examples`` random examples for any split of the
  datasets of ``write_tfds_metadata`` (slicing is ignored)."""
  import tensorflow_datasets as tfds
  write_tfds_metadata(data_dir, num_examples=num_examples)
  with tfds.testing.mock_data(num_examples=num_examples,
                              policy=tfds.testing.MockPolicy.USE_FILES,
                              data_dir=data_dir):
    yield data_dir


# ------------------------------------------------------- compilation caches ---


@contextlib.contextmanager
def persistent_compilation_cache(directory: str) -> Iterator[None]:
  """JAX's persistent compilation cache in ``directory`` for this process.

  Identical programs compiled again (a resumed run compiles the same train
  step as the first run did) are then loaded instead. The previous settings
  come back afterwards.
  """
  import jax
  from jax.experimental.compilation_cache import compilation_cache
  names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
           "jax_persistent_cache_min_entry_size_bytes")
  saved = {name: getattr(jax.config, name) for name in names}
  for name, value in zip(names, (str(directory), 0.0, -1)):
    jax.config.update(name, value)
  compilation_cache.reset_cache()
  try:
    yield
  finally:
    for name, value in saved.items():
      jax.config.update(name, value)
    compilation_cache.reset_cache()


@pytest.fixture(scope="module")
def compilation_cache(tmp_path_factory) -> Iterator[None]:
  """``persistent_compilation_cache`` for the tests of one module."""
  with persistent_compilation_cache(tmp_path_factory.mktemp("jax_cache")):
    yield


def program_env(cache_dir: str) -> Dict[str, str]:
  """The environment of program subprocesses (4 CPU devices from conftest)."""
  env = dict(os.environ)
  env["XLA_FLAGS"] = " ".join([env.get("XLA_FLAGS", ""),
                               "--xla_backend_optimization_level=0"]).strip()
  env.update(JAX_COMPILATION_CACHE_DIR=str(cache_dir),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1",
             PYTHONPATH=os.pathsep.join([REPO_ROOT, env.get("PYTHONPATH", "")]))
  return env


# ----------------------------------------------------------- program workers ---


@dataclasses.dataclass
class RunResult:
  """How one command line ended.

  ``status``: "ok", "flags_error" (absl rejected the command line),
  "usage_error" (``app.UsageError``), "exit" (``SystemExit``; ``message`` is
  its code) or "error" (another exception; ``error_type``, ``message`` and
  ``traceback``). ``stdout``: what the program printed; ``log``: what
  finola_jax and the program logged (INFO and up).
  """
  status: str
  message: str = ""
  error_type: str = ""
  traceback: str = ""
  stdout: str = ""
  log: str = ""

  def check_ok(self) -> "RunResult":
    assert self.status == "ok", f"{self.status}: {self.message}\n{self.traceback}"
    return self


# Programs the collected test modules run (``uses_program``): their workers
# start together, so that one imports while another runs.
_PROGRAMS_IN_USE = set()


def uses_program(program: str) -> str:
  """Declares, at a test module's import, that it runs ``program``."""
  _PROGRAMS_IN_USE.add(program)
  return program


class ProgramPool:
  """Worker subprocesses running ``experiments`` programs (see module doc)."""

  def __init__(self, root: str):
    self.root = str(root)
    self.cache_dir = os.path.join(self.root, "jax_cache")
    self.tfds_dir = os.path.join(self.root, "tfds")
    self.env = program_env(self.cache_dir)
    self._workers: Dict[str, subprocess.Popen] = {}
    self._requests = 0
    for program in sorted(_PROGRAMS_IN_USE):
      self._worker(program)

  def log_path(self, program: str) -> str:
    return os.path.join(self.root, f"{program}.log")

  def _worker(self, program: str) -> subprocess.Popen:
    worker = self._workers.get(program)
    if worker is None or worker.poll() is not None:
      with open(self.log_path(program), "a") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "tests.helpers", "serve", program,
             self.tfds_dir], cwd=REPO_ROOT, env=self.env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log)
      self._workers[program] = worker
    return worker

  def run(self, program: str, flags: Sequence[str],
          timeout: float = 400) -> RunResult:
    """Runs ``program`` with ``flags`` in its worker; waits for the end."""
    return self.submit(program, flags)(timeout)

  def submit(self, program: str, flags: Sequence[str]):
    """Queues ``program`` with ``flags`` in its worker (which runs one
    command line at a time); returns a function ``(timeout) → RunResult``
    that waits for its end. Results never waited for are skipped."""
    worker = self._worker(program)
    self._requests += 1
    request = self._requests
    worker.stdin.write((json.dumps({"id": request, "flags": list(flags)}) +
                        "\n").encode())
    worker.stdin.flush()
    return lambda timeout=400: self._reply(program, worker, request, flags,
                                           timeout)

  def _reply(self, program, worker, request, flags, timeout) -> RunResult:
    deadline = time.time() + timeout
    while True:
      ready, _, _ = select.select([worker.stdout], [], [],
                                  max(deadline - time.time(), 0))
      line = worker.stdout.readline() if ready else b""
      if not line:
        worker.kill()
        worker.wait()
        pytest.fail(f"{program} {' '.join(flags)}: the worker "
                    f"{'timed out' if not ready else 'died'}; log:\n"
                    f"{self.tail(program)}")
      reply = json.loads(line)
      if reply.pop("id") == request:
        return RunResult(**reply)

  def tail(self, program: str, chars: int = 6000) -> str:
    with open(self.log_path(program)) as f:
      return f.read()[-chars:]

  def close(self) -> None:
    for worker in self._workers.values():  # Nothing left to save.
      if worker.poll() is None:
        worker.kill()
      worker.wait()


@pytest.fixture(scope="session")
def programs(request, tmp_path_factory) -> ProgramPool:
  """The session's one ``ProgramPool``.

  Test modules import this fixture, and pytest makes one per module that
  does; the pool itself lives on the session's config, so they share it.
  """
  pool = getattr(request.config, "_finola_program_pool", None)
  if pool is None:
    pool = ProgramPool(tmp_path_factory.mktemp("programs"))
    request.config._finola_program_pool = pool  # pylint: disable=protected-access
    request.config.add_cleanup(pool.close)
  return pool


class _ProjectLog(logging.Handler):
  """Collects the messages finola_jax and experiments/ log."""

  def __init__(self):
    super().__init__(logging.INFO)
    self.messages = []

  def emit(self, record):
    if f"{os.sep}finola_jax{os.sep}" in record.pathname or (
        f"{os.sep}experiments{os.sep}" in record.pathname):
      self.messages.append(record.getMessage())


def _run_command_line(main, argv: List[str]) -> Dict[str, Any]:
  """Parses ``argv`` into absl's FLAGS and calls ``main``; restores FLAGS."""
  from absl import app
  from absl import flags
  from absl import logging as absl_logging
  from absl.testing import flagsaver

  result = {"status": "ok"}
  stdout = io.StringIO()
  log = _ProjectLog()
  absl_logging.get_absl_logger().addHandler(log)
  with flagsaver.flagsaver(), contextlib.redirect_stdout(stdout):
    try:
      main(flags.FLAGS(argv))
    except flags.Error as e:
      result = {"status": "flags_error", "message": str(e)}
    except app.UsageError as e:
      result = {"status": "usage_error", "message": str(e)}
    except SystemExit as e:
      result = {"status": "exit", "message": str(e.code)}
    except Exception as e:  # pylint: disable=broad-except
      result = {"status": "error", "error_type": type(e).__name__,
                "message": str(e), "traceback": traceback.format_exc()}
  absl_logging.get_absl_logger().removeHandler(log)
  result["stdout"] = stdout.getvalue()
  result["log"] = "\n".join(log.messages)
  return result


def serve(program: str, tfds_dir: str) -> None:
  """The worker: ``{"id", "flags"}`` per stdin line; a JSON result out."""
  import importlib
  replies = os.fdopen(os.dup(1), "w")
  os.dup2(2, 1)  # Anything else written to stdout goes to the log.
  sys.stdout = os.fdopen(1, "w", buffering=1)
  from absl import logging as absl_logging
  absl_logging.set_verbosity(absl_logging.INFO)
  module = importlib.import_module(program)
  main = getattr(module, "main", None)
  if main is None:
    from finola_jax.train import launch
    main = launch.main_wrapper(module.build_task)
  with mock_tfds(tfds_dir):
    for line in sys.stdin:
      request = json.loads(line)
      print(f"==== {program} {' '.join(request['flags'])}", file=sys.stderr,
            flush=True)
      result = _run_command_line(main, [program] + request["flags"])
      replies.write(json.dumps(dict(result, id=request["id"])) + "\n")
      replies.flush()


# ------------------------------------------------------------ kill / resume ---


def _start(program: str, flags: Sequence[str], env, log_path: str):
  with open(log_path, "w") as log:
    return subprocess.Popen([sys.executable, "-m", program, *flags],
                            cwd=REPO_ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT)


def _read(path: str) -> str:
  with open(path) as f:
    return f.read()


def check_kill_and_resume(pool: ProgramPool, program: str, flags: Sequence[str],
                          root: str, *, steps: int = STEPS,
                          compare_uninterrupted: bool = True,
                          timeout: float = 400) -> int:
  """SIGKILLs ``python -m program`` after its first checkpoint and restarts it.

  Checks that the restart (in ``pool``'s worker: another process, with the
  same command line) logs resuming from the latest checkpoint the killed run
  finished, does not redo the steps before it, and completes all ``steps``;
  with ``compare_uninterrupted``, that the final parameters equal those of
  an uninterrupted run. ``flags`` are all but ``--workdir``; ``steps`` is
  their ``--steps`` (that of ``tiny_flags`` by default). Returns the step
  resumed from.
  """
  from finola_jax.train import checkpointing

  workdir = os.path.join(str(root), "interrupted")
  log_path = os.path.join(str(root), "killed.log")
  reference = os.path.join(str(root), "uninterrupted")
  killed = _start(program, [*flags, f"--workdir={workdir}"], pool.env, log_path)
  try:
    if compare_uninterrupted:  # Meanwhile, in the worker.
      reference_result = pool.submit(program, [*flags, f"--workdir={reference}"])
    deadline = time.time() + timeout
    while not checkpoint_steps(workdir):
      assert killed.poll() is None, (
          f"exited ({killed.returncode}) before its first checkpoint:\n"
          f"{_read(log_path)[-6000:]}")
      assert time.time() < deadline, "no checkpoint in time"
      time.sleep(0.01)
    killed.send_signal(signal.SIGKILL)
    assert killed.wait() == -signal.SIGKILL
  finally:
    if killed.poll() is None:
      killed.kill()
      killed.wait()
  resume_step = checkpoint_steps(workdir)[-1]
  assert resume_step < steps, "the run was over before it was killed"
  if compare_uninterrupted:
    reference_result(timeout).check_ok()

  resumed = pool.run(program, [*flags, f"--workdir={workdir}"]).check_ok()
  assert re.search(rf"Resuming from the checkpoint at step {resume_step}\b",
                   resumed.log), resumed.log
  assert checkpoint_steps(workdir)[-1] == steps
  logged = train_loss_steps(workdir)
  assert logged.count(1) == 1, logged  # Not restarted from scratch.
  assert set(logged) == set(range(1, steps + 1)), logged
  assert logged[resume_step - steps:] == list(range(resume_step + 1, steps + 1))

  if compare_uninterrupted:
    step, expected = checkpointing.restore_latest_params(reference)
    assert step == steps
    _, actual = checkpointing.restore_latest_params(workdir)
    assert_trees_equal(actual, expected)
  return resume_step


if __name__ == "__main__":
  if len(sys.argv) != 4 or sys.argv[1] != "serve":
    sys.exit("usage: python -m tests.helpers serve PROGRAM TFDS_METADATA_DIR")
  serve(sys.argv[2], sys.argv[3])
