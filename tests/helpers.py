"""Shared helpers of the trainer, program and pipeline tests.

* Tiny configs (``tiny_config``: an ``experiments/configs`` recipe with
  16×16 images and 8 channels): the tests train the same few shapes, so
  compiled programs are reused (the compilation cache of conftest.py).
* ``run_program``: a command line of an ``experiments`` program, parsed by
  absl into fresh ``FlagValues`` and run in this process.
* ``check_kill_and_resume``: SIGKILLs (or SIGTERMs: preemption) a real
  ``python3 -m experiments.X`` after its first checkpoint, resumes the run
  and checks that it finished where an uninterrupted run does.
* TFDS mocks (``mock_tfds``) and image folders.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Dict, Iterator, List, Sequence

import chex
import jax
import numpy as np

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

# A model every task accepts (masked: image_size divisible by 2·stride,
# encoder_depth >= log2(stride)), walking in finola_jax.unroll's default
# order, which the tests' references take (the main job averages both).
TINY_MODEL = dict(image_size=16, stride=2, channels=8, encoder_width=4,
                  encoder_depth=1, decoder_width=8, path="vertical_first")
BATCH_SIZE = 4  # Divisible by the 4 forced CPU devices (tests/conftest.py).
# Program runs: the same optimizer settings everywhere, so their compiled
# steps are shared through the compilation cache; enough steps after the
# first checkpoint to kill a run in the middle.
STEPS = 12
CHECKPOINT_EVERY = 4
TINY_RUN = dict(TINY_MODEL, batch_size=BATCH_SIZE, steps=STEPS, warmup_steps=1,
                log_every=1, eval_every=1000, checkpoint_every=CHECKPOINT_EVERY,
                num_images=2)

# TFDS datasets mocked (name: its validation split) and the number of
# examples every mocked split yields.
MOCK_DATASETS = {"cifar10": "test", "imagenet2012": "validation"}
NUM_MOCK_EXAMPLES = 6


def load_config(name: str):
  """``experiments/configs/NAME.py``'s ``get_config()``."""
  return importlib.import_module(f"experiments.configs.{name}").get_config()


def tiny_config(name: str = "reconstruct", **overrides):
  """The recipe ``name`` with ``TINY_RUN`` and ``overrides`` applied."""
  config = load_config(name)
  config.update(dict(TINY_RUN, **overrides))
  return config


def override_flags(**overrides) -> List[str]:
  """``--config.KEY=VALUE`` flags of ``TINY_RUN`` and ``overrides``."""
  return [f"--config.{key}={value}"
          for key, value in dict(TINY_RUN, **overrides).items()]


@functools.lru_cache(maxsize=None)
def initial_params(task):
  """``task``'s initial parameters (seed 0)."""
  return jax.jit(task.init_params)(jax.random.PRNGKey(0))


def checkpoint_steps(workdir) -> List[int]:
  """Steps of the finished checkpoints (orbax renames a finished one to its step)."""
  directory = os.path.join(str(workdir), "checkpoints")
  if not os.path.isdir(directory):
    return []
  return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


def read_metrics(workdir) -> List[Dict[str, Any]]:
  """``WORKDIR/metrics.jsonl``: checks every line is a JSON object with a step."""
  records = []
  with open(os.path.join(str(workdir), "metrics.jsonl")) as f:
    for line in f:
      record = json.loads(line)
      assert isinstance(record, dict) and isinstance(record["step"], int), line
      records.append(record)
  return records


def train_loss_steps(workdir) -> List[int]:
  """The steps of the training-loss lines of ``metrics.jsonl``, in file order."""
  return [r["step"] for r in read_metrics(workdir) if "train/loss" in r]


def assert_trees_equal(actual, expected, **tolerance) -> None:
  """Same structure; leaves equal (exactly, or ``assert_allclose(**tolerance)``)."""
  actual_leaves, actual_tree = jax.tree_util.tree_flatten(actual)
  expected_leaves, expected_tree = jax.tree_util.tree_flatten(expected)
  assert actual_tree == expected_tree
  for a, e in zip(actual_leaves, expected_leaves):
    if tolerance:
      np.testing.assert_allclose(np.asarray(a), np.asarray(e), **tolerance)
    else:
      np.testing.assert_array_equal(np.asarray(a), np.asarray(e))


def run_program(module, args: Sequence[str]) -> str:
  """Runs ``python3 -m MODULE ARGS`` in this process; returns its stdout.

  The command line is parsed by absl into fresh ``FlagValues`` (so programs
  with the same flag names coexist); errors propagate (``flags.Error``,
  ``app.UsageError``, ...).
  """
  from absl import flags
  argv = [module.__name__, *args]
  flag_values = flags.FlagValues()
  module.define_flags(flag_values, sys_argv=argv)
  remaining = flag_values(argv)
  with contextlib.redirect_stdout(io.StringIO()) as stdout:
    module.main(remaining, flag_values)
  return stdout.getvalue()


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


def _write_mock_metadata(name: str, splits: Sequence[str], num_examples: int,
                         data_dir: str) -> None:
  """TFDS metadata of ``name`` with ``splits`` of ``num_examples`` each, so
  that a mock knows the splits (and the dataset counts as prepared)."""
  import tensorflow_datasets as tfds
  builder = tfds.builder(name, data_dir=data_dir)
  if os.path.isdir(builder.data_dir):
    return
  builder.info.set_splits(tfds.core.SplitDict([
      tfds.core.SplitInfo(name=split, shard_lengths=[num_examples],
                          num_bytes=0) for split in splits]))
  os.makedirs(builder.data_dir)
  builder.info.write_to_directory(builder.data_dir)


@contextlib.contextmanager
def mock_tfds(data_dir: str) -> Iterator[str]:
  """TFDS yields ``NUM_MOCK_EXAMPLES`` random examples for any split of
  ``MOCK_DATASETS`` (slicing is ignored) read from ``data_dir``.

  TFDS metadata with each dataset's real split names is written first, so
  that the mock knows the splits.
  """
  import tensorflow_datasets as tfds
  for name, validation in MOCK_DATASETS.items():
    _write_mock_metadata(name, ("train", validation), NUM_MOCK_EXAMPLES,
                         data_dir)
  with tfds.testing.mock_data(num_examples=NUM_MOCK_EXAMPLES,
                              policy=tfds.testing.MockPolicy.USE_FILES,
                              data_dir=data_dir):
    yield data_dir


# COCO as TFDS prepares it, mocked: its splits and examples per split.
MOCK_COCO = "coco/2017"
MOCK_COCO_SPLITS = ("train", "validation")
NUM_MOCK_COCO_EXAMPLES = 5


def mock_coco_examples(split: str) -> List[Dict[str, Any]]:
  """The mocked ``coco/2017`` examples of ``split``, as TFDS encodes them.

  Images of varied sizes with 0 to 3 objects: valid normalized boxes
  ``[ymin, xmin, ymax, xmax]``, labels in [0, 80), a crowd object in
  example 1 and none in example 2. Different per split (and image ids do
  not repeat across splits).
  """
  import tensorflow_datasets as tfds
  first = MOCK_COCO_SPLITS.index(split)
  rng = np.random.default_rng(first)
  examples = []
  for i in range(NUM_MOCK_COCO_EXAMPLES):
    height, width = rng.integers(12, 40, 2)
    count = 0 if i == 2 else 1 + i % 3
    corners = np.sort(rng.uniform(0, 1, (count, 2, 2)), axis=1)
    # At least a pixel wide and high: COCO's boxes have positive sizes.
    corners[:, 1] = np.maximum(corners[:, 1], corners[:, 0] + 1.5 / np.array(
        [height, width]))
    corners = np.minimum(corners, 1.0)
    objects = [{"id": 1000 * (first + 1) + 10 * i + k,
                "area": int(rng.integers(1, height * width)),
                "bbox": tfds.features.BBox(*(float(v) for v in (
                    c[0, 0], c[0, 1], c[1, 0], c[1, 1]))),
                "label": int(rng.integers(0, 80)),
                "is_crowd": i == 1 and k == 0}
               for k, c in enumerate(corners)]
    examples.append({
        "image": rng.integers(0, 256, (height, width, 3)).astype(np.uint8),
        "image/filename": f"{split}{i}.jpg",
        "image/id": 100 * (first + 1) + i,
        "objects": objects})
  return examples


@contextlib.contextmanager
def mock_tfds_coco(data_dir: str) -> Iterator[str]:
  """TFDS serves ``mock_coco_examples`` as ``coco/2017``, read from
  ``data_dir`` (slicing is ignored).

  `tfds.testing.mock_data`'s random examples are no detection set: the
  fields of one object sequence get different lengths and box corners are
  unordered, so its ``as_dataset_fn`` serves these instead, encoded and
  decoded by the dataset's own features (decoders such as SkipDecoding
  apply).
  """
  import tensorflow as tf
  import tensorflow_datasets as tfds
  _write_mock_metadata(MOCK_COCO, MOCK_COCO_SPLITS, NUM_MOCK_COCO_EXAMPLES,
                       data_dir)

  def as_dataset(builder, split, decoders=None, read_config=None,
                 shuffle_files=False):
    del read_config, shuffle_files  # One file: nothing to shuffle.
    # `split` is a name, a slice or a process's share (slicing is ignored).
    name = next(s for s in MOCK_COCO_SPLITS if s in str(split))
    features = builder.info.features
    serialized = [features.serialize_example(example)
                  for example in mock_coco_examples(name)]
    return tf.data.Dataset.from_tensor_slices(serialized).map(
        functools.partial(features.deserialize_example, decoders=decoders))

  with tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_FILES,
                              data_dir=data_dir, as_dataset_fn=as_dataset):
    yield data_dir


def program_env() -> Dict[str, str]:
  """The environment of program subprocesses: this one's (devices and
  compilation cache from conftest) with the repository on the path."""
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join([REPO_ROOT, env.get("PYTHONPATH", "")])
  return env


# ------------------------------------------------------------ kill / resume ---


def check_kill_and_resume(module, config, root, caplog,
                          signal_number: int = signal.SIGKILL,
                          timeout: float = 600) -> int:
  """Stops ``python3 -m MODULE`` after its first checkpoint; resumes it.

  The stopped process runs ``config`` (a ``tiny_config``, given as
  ``--config.KEY`` overrides of the program's default); meanwhile this
  process trains the same config uninterrupted.

  * ``SIGKILL``: the latest checkpoint the killed run finished is resumed.
  * ``SIGTERM`` (a preemption notice): the program must save a checkpoint at
    the step it had reached and exit with status 0; that step is resumed.

  The run is resumed here (``module.train_and_evaluate``, what the same
  command runs), which must log resuming from that step, not redo the
  steps before it, and end with the uninterrupted run's parameters and
  final training loss. Returns the step resumed from.
  """
  from finola_jax.train import checkpointing
  workdir, reference = os.path.join(root, "stopped"), os.path.join(root, "reference")
  overrides = [f"--config.{k}={v}" for k, v in config.items() if v is not None]
  stopped_log = os.path.join(root, "stopped.log")
  with open(stopped_log, "w") as log:
    stopped = subprocess.Popen(
        [sys.executable, "-m", module.__name__, f"--workdir={workdir}",
         *overrides], cwd=REPO_ROOT, env=program_env(), stdout=log,
        stderr=subprocess.STDOUT)

  def stop_after_first_checkpoint():
    deadline = time.time() + timeout
    while (not checkpoint_steps(workdir) and stopped.poll() is None
           and time.time() < deadline):
      time.sleep(0.01)
    stopped.send_signal(signal_number)

  watcher = threading.Thread(target=stop_after_first_checkpoint)
  watcher.start()
  try:
    module.train_and_evaluate(config, reference)  # Meanwhile, uninterrupted.
  finally:
    watcher.join()
    stopped.wait()
  with open(stopped_log) as f:
    output = f.read()
  resume_step = checkpoint_steps(workdir)[-1]
  assert resume_step < config.steps, "the run was over before it was stopped"
  if signal_number == signal.SIGKILL:
    assert stopped.returncode == -signal.SIGKILL, output[-6000:]
  else:
    assert stopped.returncode == 0, output[-6000:]
    assert re.search(rf"Preempted: saved the checkpoint at step {resume_step} ",
                     output), output[-6000:]
    # Saved at the step it had reached, not at the periodic checkpoint before.
    assert train_loss_steps(workdir)[-1] == resume_step

  # What the same command runs (in this process: no second start-up).
  caplog.set_level(logging.INFO, logger="absl")
  module.train_and_evaluate(config, workdir)
  assert re.search(rf"Resuming from the checkpoint at step {resume_step}\b",
                   caplog.text), caplog.text
  assert checkpoint_steps(workdir)[-1] == config.steps
  logged = train_loss_steps(workdir)
  assert logged.count(1) == 1, logged  # Not restarted from scratch.
  assert set(logged) == set(range(1, config.steps + 1)), logged
  assert logged[resume_step - config.steps:] == list(
      range(resume_step + 1, config.steps + 1))
  final_loss = lambda w: [r["train/loss"] for r in read_metrics(w)
                          if r["step"] == config.steps and "train/loss" in r]
  assert final_loss(workdir) == final_loss(reference), (
      final_loss(workdir), final_loss(reference))
  _, expected = checkpointing.restore_latest_params(reference)
  _, actual = checkpointing.restore_latest_params(workdir)
  assert_trees_equal(actual, expected)
  return resume_step
