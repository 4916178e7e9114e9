"""The recipes: every config in experiments/configs/ builds its model and
optimizer (``jax.eval_shape``: nothing is trained or even initialized), and
the README's commands are those configs plus overrides that parse."""

import importlib
import math
import os
import re
import shlex

import jax
import numpy as np
import pytest
from absl import flags

from experiments import bench_memory
from experiments import bench_train
from experiments import detect
from experiments import linear_probe
from finola_jax import tasks
from finola_jax.tasks import detection
from finola_jax.tasks import probe
from finola_jax.train import run_config
from finola_jax.train import step as step_lib
from tests import helpers

CONFIG_DIR = os.path.join(helpers.REPO_ROOT, "experiments", "configs")
CONFIGS = sorted(name[:-3] for name in os.listdir(CONFIG_DIR)
                 if name.endswith(".py") and name != "__init__.py")
# Programs that take --config, and so appear in the README with recipes.
PROGRAMS = ("reconstruct", "pretrain_masked", "linear_probe", "ablation",
            "sweep_unroll", "bench_train", "bench_memory")


def _readme() -> str:
  with open(os.path.join(helpers.REPO_ROOT, "README.md")) as f:
    return f.read()


def _check_builds(config) -> int:
  """Builds ``config``'s model and optimizer abstractly; their parameter count."""
  if config.task == "linear_probe":
    linear_probe.validate_config(config)
    assert linear_probe.probe_config(config).protocol == config.protocol
    return 0
  if config.task == "detection":
    return _check_detection_builds(config)
  run_config.validate_training(config)
  task = tasks.create_task(config)
  state = step_lib.abstract_train_state(task, config)
  assert state.params["matrices"]["A"].shape == (config.channels,) * 2
  assert jax.tree_util.tree_structure(state.opt_state) is not None
  return sum(math.prod(leaf.shape)
             for leaf in jax.tree_util.tree_leaves(state.params))


def _check_detection_builds(config) -> int:
  """The detector on the Fashion-MNIST pre-training's encoder (zeros)."""
  checked = run_config.from_dict(run_config.to_dict(config))
  checked.dataset = "coco:DIR"  # given on the command line
  detect.validate_config(checked)
  pretraining = helpers.load_config("pretrain_masked_fashion_mnist")
  masked = tasks.create_task(pretraining)
  encoder = jax.tree_util.tree_map(
      lambda leaf: np.zeros(leaf.shape, leaf.dtype),
      jax.eval_shape(masked.init_params, jax.random.PRNGKey(0))["encoder"])
  backbone = detection.Backbone(probe.masked_finola_encoder(masked.model),
                                encoder, pretraining.stride)
  task = detection.DetectionTask(config, backbone, num_classes=10)
  state = step_lib.abstract_train_state(task, config)
  assert jax.tree_util.tree_structure(state.opt_state) is not None
  return sum(math.prod(leaf.shape)
             for leaf in jax.tree_util.tree_leaves(state.params["head"]))


@pytest.mark.parametrize("name", CONFIGS)
def test_every_config_builds_and_round_trips_through_config_json(name, tmp_path):
  config = helpers.load_config(name)
  assert _check_builds(config) >= 0
  run_config.write(str(tmp_path), config)
  saved = run_config.read(str(tmp_path))
  run_config.check_same_run(str(tmp_path), saved, config)  # Identical.
  assert run_config.to_dict(saved) == run_config.to_dict(config)


def _readme_commands():
  """``(program, arguments)`` of every --config program run in a README code
  block.

  Continuation lines are joined, command substitutions become ``host`` and
  shell variables ``0``; a command ends with its line, a shell operator or
  the quote that closes a ``bash -c '...'``.
  """
  commands = []
  for block in re.findall(r"```\w*\n(.*?)```", _readme(), re.DOTALL):
    block = re.sub(r"\$\([^)]*\)", "host", block.replace("\\\n", " "))
    block = re.sub(r"\$\{?\w+\}?", "0", block)
    for program, rest in re.findall(r"python3? -m experiments\.(\w+)(.*)", block):
      if program not in PROGRAMS:
        continue
      for quote in "'\"":
        if rest.count(quote) % 2:  # Closes a quoted command around it.
          rest = rest[:rest.rindex(quote)]
      words = []
      for word in shlex.split(rest):
        if word in ("&", "&&", ";", "|"):
          break
        words.append(word)
      commands.append((program, words))
  return commands


def test_readme_commands_are_configs_with_overrides_that_parse(monkeypatch):
  monkeypatch.chdir(helpers.REPO_ROOT)  # Config paths are relative to it.
  commands = _readme_commands()
  assert {program for program, _ in commands} == set(PROGRAMS)
  for program, args in commands:
    module = importlib.import_module(f"experiments.{program}")
    argv = [program, *args]
    flag_values = flags.FlagValues()
    module.define_flags(flag_values, sys_argv=argv)
    flag_values(argv)  # Unknown flags, keys or bad values raise.
    config = flag_values.config
    assert config.task == {"pretrain_masked": "masked",
                           "linear_probe": "linear_probe",
                           "detect": "detection"}.get(
                               program, "reconstruction"), argv
    _check_builds(config)


def test_readme_mentions_only_configs_that_exist():
  mentioned = set(re.findall(r"experiments/configs/(\w+)\.py", _readme()))
  assert mentioned, "the README names no config"
  assert mentioned <= set(CONFIGS), mentioned - set(CONFIGS)


def test_matmul_precision_and_implementation_reach_the_unroll():
  params = None
  for precision, expected in ((None, False), ("highest", True)):
    task = tasks.create_task(helpers.tiny_config(matmul_precision=precision))
    params = params or jax.eval_shape(task.init_params, jax.random.PRNGKey(0))
    jaxpr = str(jax.make_jaxpr(task.reconstruct)(
        params, np.zeros((1, 16, 16, 3), np.float32)))
    assert ("Precision.HIGHEST" in jaxpr) == expected, precision
  for implementation, expected in (("xla", False), ("pallas", True)):
    # The kernel takes C in multiples of 16.
    task = tasks.create_task(helpers.tiny_config(
        channels=16, unroll_implementation=implementation))
    params = jax.eval_shape(task.init_params, jax.random.PRNGKey(0))
    jaxpr = str(jax.make_jaxpr(task.reconstruct)(
        params, np.zeros((1, 16, 16, 3), np.float32)))
    assert ("pallas_call" in jaxpr) == expected, implementation


def test_bench_memory_compiles_the_train_step_of_a_config():
  config = helpers.tiny_config(**{"stride": 1, "encoder_depth": 0})
  temps = [bench_memory.train_step_memory(config, batch).temp_size_in_bytes
           for batch in (2, 8)]
  # Activations grow with the batch, at least by the 6 maps of 16×16×8
  # float32 the added examples' feature maps alone take.
  assert temps[1] - temps[0] >= 6 * 16 * 16 * 8 * 4, temps


def test_bench_train_counts_the_unroll_analytically():
  config = helpers.tiny_config(stride=1, channels=8)
  # 255 new positions of a 16×16 map, one 8×8 matvec each, ×3 for the
  # backward pass.
  assert bench_train.unroll_flops(config) == 3 * 255 * 2 * 8**2
  config.path = "average"
  assert bench_train.unroll_flops(config) == 2 * 3 * 255 * 2 * 8**2
  config.decoder = "dense"
  assert bench_train.unroll_flops(config) == 0
