"""The recipes: every config in experiments/configs/ builds its model and
optimizer (``jax.eval_shape``: nothing is trained or even initialized), and
the commands of the README and docs/ are those configs plus overrides that
parse, run modules of this tree and link to files that exist."""

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
import finola_jax
from finola_jax import tasks
from finola_jax.tasks import detection
from finola_jax.tasks import probe
from finola_jax.train import run_config
from finola_jax.train import step as step_lib
from tests import helpers


def _read(path: str) -> str:
  with open(path) as f:
    return f.read()


CONFIG_DIR = os.path.join(helpers.REPO_ROOT, "experiments", "configs")
CONFIGS = sorted(name[:-3] for name in os.listdir(CONFIG_DIR)
                 if name.endswith(".py") and name != "__init__.py")
# The programs with absl flags (``define_flags``): the docs run each, and
# their commands there must parse.
PROGRAMS = sorted(
    f"experiments.{name[:-3]}"
    for name in os.listdir(os.path.join(helpers.REPO_ROOT, "experiments"))
    if name.endswith(".py") and "def define_flags(" in _read(
        os.path.join(helpers.REPO_ROOT, "experiments", name)))
# Modules the docs run that are not this repository's.
EXTERNAL_MODULES = ("pip", "pytest")


def _pages():
  """README.md and every page under docs/: ``{path from the root: text}``."""
  paths = ["README.md"]
  for folder, _, names in os.walk(os.path.join(helpers.REPO_ROOT, "docs")):
    paths += [os.path.relpath(os.path.join(folder, name), helpers.REPO_ROOT)
              for name in names if name.endswith(".md")]
  return {path: _read(os.path.join(helpers.REPO_ROOT, path))
          for path in sorted(paths)}


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
  # One C×C pair per path; a single path keeps the unstacked [C, C]. A
  # dense map in the walk's place has none.
  paths = config.get("paths", 1)
  if config.get("decoder") != "dense":
    assert state.params["matrices"]["A"].shape == (
        (paths,) * (paths > 1) + (config.channels,) * 2)
  else:
    assert "matrices" not in state.params
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


def test_a_run_saved_before_a_model_key_existed_resumes_at_its_old_value(
    tmp_path):
  """A config.json without a key of tasks.ADDED_KEY_DEFAULTS is the same
  run as a config with that key at its default, and only then."""
  config = helpers.load_config("reconstruct")
  config.update(tasks.ADDED_KEY_DEFAULTS)  # The main job flattens; not here.
  saved = run_config.to_dict(config)
  for key in tasks.ADDED_KEY_DEFAULTS:
    saved.pop(key)
  saved = run_config.from_dict(saved)
  run_config.check_same_run(str(tmp_path), saved, config,
                            tasks.ADDED_KEY_DEFAULTS)
  config.matrix_init_damping = 0.01
  with pytest.raises(run_config.ConfigError,
                     match=r"config.matrix_init_damping: saved 0.0 vs now 0.01"):
    run_config.check_same_run(str(tmp_path), saved, config,
                              tasks.ADDED_KEY_DEFAULTS)


def _commands():
  """``(page, module, arguments)`` of every ``python3 -m MODULE ...`` command
  in a code block of the README or a docs page.

  Continuation lines are joined, command substitutions become ``host`` and
  shell variables ``0``; a command ends with its line, a comment, a shell
  operator or the quote that closes a ``bash -c '...'``.
  """
  commands = []
  for page, text in _pages().items():
    for block in re.findall(r"```\w*\n(.*?)```", text, re.DOTALL):
      block = re.sub(r"\$\([^)]*\)", "host", block.replace("\\\n", " "))
      block = re.sub(r"\$\{?\w+\}?", "0", block)
      for module, rest in re.findall(r"python3? -m ([\w.]+)(.*)", block):
        for quote in "'\"":
          if rest.count(quote) % 2:  # Closes a quoted command around it.
            rest = rest[:rest.rindex(quote)]
        words = []
        for word in shlex.split(rest, comments=True):
          if word in ("&", "&&", ";", "|"):
            break
          words.append(word)
        commands.append((page, module, words))
  return commands


def _in_tree(module: str) -> bool:
  path = os.path.join(helpers.REPO_ROOT, *module.split("."))
  return (os.path.isfile(path + ".py")
          or os.path.isfile(os.path.join(path, "__main__.py")))


def test_every_module_the_docs_run_is_in_the_tree():
  modules = {(page, module) for page, module, _ in _commands()
             if module.split(".")[0] not in EXTERNAL_MODULES
             # Placeholders such as experiments.NAME.
             and not any(part.isupper() for part in module.split("."))}
  assert modules, "the docs run no program"
  missing = sorted(f"{page}: python3 -m {module}"
                   for page, module in modules if not _in_tree(module))
  assert not missing, missing


def test_docs_run_every_program_that_takes_flags():
  run = {module for _, module, _ in _commands()}
  assert set(PROGRAMS) <= run, set(PROGRAMS) - run


def _parse(module, argv) -> flags.FlagValues:
  flag_values = flags.FlagValues()
  module.define_flags(flag_values, sys_argv=argv)
  flag_values(argv)  # Unknown flags, keys or bad values raise.
  return flag_values


@pytest.mark.parametrize("program", PROGRAMS)
def test_docs_commands_are_configs_with_overrides_that_parse(program,
                                                             monkeypatch):
  monkeypatch.chdir(helpers.REPO_ROOT)  # Config paths are relative to it.
  module = importlib.import_module(program)
  for page, name, args in _commands():
    if name != program:
      continue
    flag_values = _parse(module, [program, *args])
    if "config" not in flag_values:
      continue
    # The same command without its recipe: the program's own default.
    default = _parse(module, [program, *(
        arg for arg in args if not arg.startswith("--config"))]).config
    # A recipe of another program's task would fail only at run time.
    assert flag_values.config.task == default.task, (page, args)
    _check_builds(flag_values.config)


def test_docs_mention_only_configs_that_exist():
  mentioned = set()
  for text in _pages().values():
    mentioned |= set(re.findall(r"experiments/configs/(\w+)\.py", text))
  assert mentioned, "the docs name no config"
  assert mentioned <= set(CONFIGS), mentioned - set(CONFIGS)


def test_docs_links_lead_to_files_that_exist():
  broken = []
  for page, text in _pages().items():
    folder = os.path.dirname(os.path.join(helpers.REPO_ROOT, page))
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
      target = target.split("#")[0]
      if not target or re.match(r"\w+:", target):  # Anchors, URLs.
        continue
      if not os.path.exists(os.path.normpath(os.path.join(folder, target))):
        broken.append(f"{page}: {target}")
  assert not broken, broken


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


def test_logging_the_map_sizes_keeps_no_batch_of_maps_alive(monkeypatch):
  # The paper's step (bfloat16, decoder_chunk=1) once kept twice its
  # temporaries for these statistics (a float32 |z|), then 0.9 of a map
  # more (a bfloat16 copy of the maps fed to separate reductions); at this
  # size the copy showed as 0.4 of a map. One reduction reads the maps.
  config = helpers.tiny_config(**{"image_size": 64, "stride": 1,
                                  "channels": 256, "encoder_depth": 1,
                                  "encoder_width": 8, "decoder_width": 8,
                                  "precision": "bfloat16",
                                  "decoder_chunk": 1})
  batch = 4
  logged = bench_memory.train_step_memory(config, batch).temp_size_in_bytes
  monkeypatch.setattr(
      finola_jax, "map_statistics",
      lambda maps: {"max_abs_z": 0.0, "mean_abs_z": 0.0,
                    "edge_to_centre": 0.0})
  unlogged = bench_memory.train_step_memory(config, batch).temp_size_in_bytes
  one_map = batch * 64 * 64 * config.channels * 2
  assert logged - unlogged <= 0.01 * one_map, (logged, unlogged, one_map)


def test_bench_memory_picks_the_fastest_decoder_chunk_that_fits(monkeypatch):
  assert bench_memory.fastest_first([1, 4, 0, 2, 4]) == [0, 4, 2, 1]
  config = helpers.tiny_config(**{"stride": 1, "encoder_depth": 0})
  compiled = {}

  def compile_once(config, per_device):
    key = (config.decoder_chunk, per_device)
    if key not in compiled:
      compiled[key] = train_step_memory(config, per_device)
    return compiled[key]

  train_step_memory = bench_memory.train_step_memory
  monkeypatch.setattr(bench_memory, "train_step_memory", compile_once)
  totals = {}

  def total(chunk, stats):
    totals[chunk] = stats.argument_size_in_bytes + stats.temp_size_in_bytes

  # Decoding fewer examples at a time keeps fewer activations alive.
  assert bench_memory.pick_decoder_chunk(config, 8, [0, 4, 2], float("inf"),
                                         report=total) == 0
  assert bench_memory.pick_decoder_chunk(config, 8, [4, 2], 0,
                                         report=total) is None
  assert totals[0] > totals[4] > totals[2], totals
  # A budget between chunk 4's step and chunk 2's takes chunk 2, having
  # tried the faster ones first.
  tried = []
  budget = (totals[4] + totals[2]) / 2
  assert bench_memory.pick_decoder_chunk(
      config, 8, [2, 0, 1, 4], budget,
      report=lambda chunk, _: tried.append(chunk)) == 2
  assert tried == [0, 4, 2]


def test_bench_train_counts_the_unroll_analytically():
  config = helpers.tiny_config(stride=1, channels=8)
  # 255 new positions of a 16×16 map, one 8×8 matvec each, ×3 for the
  # backward pass.
  assert bench_train.unroll_flops(config) == 3 * 255 * 2 * 8**2
  config.path = "average"
  assert bench_train.unroll_flops(config) == 2 * 3 * 255 * 2 * 8**2
  config.decoder = "dense"
  assert bench_train.unroll_flops(config) == 0
