"""Tests of the program experiments/linear_probe.py (through helpers.ProgramPool).

The probed encoder comes from a pretrain_masked-style workdir written here:
config.json by ``check_run_config`` and a checkpoint at step 7 holding a
tiny MaskedFinola train state.
"""

import json
import os

import jax
import pytest
from flax.training import train_state

from finola_jax.train import checkpointing
from finola_jax.train import trainer
from tests import helpers
from tests.helpers import programs  # pylint: disable=unused-import (fixture)

PROGRAM = helpers.uses_program("experiments.linear_probe")
PRETRAINED_STEP = 7
FAST = ["--probe_steps=30", "--batch_size=2"]


@pytest.fixture(scope="module")
def pretrained_workdir(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("pretrained"))
  task = helpers.masked_task()
  trainer.check_run_config(workdir, task.describe())
  params = jax.tree_util.tree_map(lambda x: 1.5 * x + 0.01,
                                  helpers.initial_params(task))
  state = train_state.TrainState.create(
      apply_fn=None, params=params,
      tx=trainer.create_optimizer(helpers.train_config(workdir)))
  manager = checkpointing.create_manager(workdir)
  checkpointing.save(manager, PRETRAINED_STEP, state.replace(step=PRETRAINED_STEP))
  manager.wait_until_finished()
  manager.close()
  return workdir


@pytest.fixture(scope="module")
def labeled_folder(tmp_path_factory):
  return helpers.write_labeled_folder(str(tmp_path_factory.mktemp("labeled")))


@pytest.mark.parametrize("source", ["cifar10", "folder", "folder_random_init"])
def test_probe_writes_top1(programs, pretrained_workdir, labeled_folder,
                           tmp_path, source):
  if source == "cifar10":
    dataset = ["--dataset=cifar10", f"--data_dir={programs.tfds_dir}"]
    counts = (helpers.NUM_MOCK_EXAMPLES, helpers.NUM_MOCK_EXAMPLES)
  else:  # 5 images per class, the 5th held out.
    dataset = [f"--dataset=folder:{labeled_folder}"]
    counts = (8, 2)
  random_init = source.endswith("random_init")
  result = programs.run(PROGRAM, [
      f"--workdir={tmp_path}", f"--pretrained_workdir={pretrained_workdir}",
      *FAST, *dataset] + (["--random_init"] if random_init else [])).check_ok()

  with open(tmp_path / "probe.json") as f:
    probe = json.load(f)
  assert 0.0 <= probe["top1"] <= 1.0 and 0.0 <= probe["train_top1"] <= 1.0
  assert (probe["num_train"], probe["num_validation"]) == counts
  assert probe["encoder"] == ("random_init" if random_init
                              else f"step {PRETRAINED_STEP}")
  assert probe["dataset"] == dataset[0].split("=", 1)[1]
  assert probe["pretrained_workdir"] == os.path.abspath(pretrained_workdir)
  assert f"top-1 {probe['top1']:.4f}" in result.stdout
  if source != "cifar10":  # Dark and light images: told apart by any encoder.
    assert probe["train_top1"] == 1.0 and probe["top1"] == 1.0


@pytest.mark.parametrize("flags, flag", [
    ([], "--pretrained_workdir"),
    (["--pretrained_workdir={empty}"], "--pretrained_workdir"),
    (["--probe_steps=0"], "--probe_steps"),
    (["--batch_size=0"], "--batch_size"),
    (["--image_size=0"], "--image_size"),
    (["--max_examples=0"], "--max_examples"),
    (["--learning_rate=0"], "--learning_rate"),
    (["stray"], "stray"),
])
def test_probe_usage_errors_name_the_flag(programs, pretrained_workdir, tmp_path,
                                          flags, flag):
  defaults = [] if flag == "--pretrained_workdir" else [
      f"--pretrained_workdir={pretrained_workdir}"]
  flags = [f.format(empty=tmp_path) for f in flags]
  result = programs.run(PROGRAM, [f"--workdir={tmp_path / 'probe'}", *defaults,
                                  *flags])
  assert result.status == "usage_error", result
  assert flag in result.message
  assert not (tmp_path / "probe").exists()


def test_probe_needs_a_workdir(programs, pretrained_workdir):
  result = programs.run(PROGRAM, [f"--pretrained_workdir={pretrained_workdir}"])
  assert result.status == "flags_error" and "--workdir" in result.message
