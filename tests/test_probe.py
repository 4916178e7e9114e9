"""Tests of the program experiments/linear_probe.py (in this process).

The probed encoder comes from a pretrain_masked-style workdir written here:
config.json and a checkpoint at step 7 holding a tiny masked train state.
"""

import json
import os

import jax
import pytest
from absl import app
from absl import flags

from experiments import linear_probe
from finola_jax import tasks
from finola_jax.train import checkpointing
from finola_jax.train import run_config
from finola_jax.train import step as step_lib
from tests import helpers

PRETRAINED_STEP = 7
FAST = ["--config.steps=30", "--config.batch_size=2"]


@pytest.fixture(scope="module")
def pretrained_workdir(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("pretrained"))
  config = helpers.tiny_config("pretrain_masked")
  run_config.write(workdir, config)
  state = step_lib.create_train_state(tasks.create_task(config), config)
  state = state.replace(step=PRETRAINED_STEP, params=jax.tree_util.tree_map(
      lambda x: 1.5 * x + 0.01, state.params))
  manager = checkpointing.create_manager(workdir)
  checkpointing.save(manager, PRETRAINED_STEP, state)
  manager.close()
  return workdir


@pytest.fixture(scope="module")
def labeled_folder(tmp_path_factory):
  return helpers.write_labeled_folder(str(tmp_path_factory.mktemp("labeled")))


@pytest.mark.parametrize("source", ["cifar10", "folder", "folder_random_init"])
def test_probe_writes_top1(pretrained_workdir, labeled_folder, tmp_path, source):
  random_init = source.endswith("random_init")
  args = [f"--workdir={tmp_path / 'probe'}",
          f"--pretrained_workdir={pretrained_workdir}", *FAST,
          f"--config.random_init={random_init}"]
  with helpers.mock_tfds(str(tmp_path / "tfds")) as data_dir:
    if source == "cifar10":
      dataset = "cifar10"
      args.append(f"--config.data_dir={data_dir}")
      counts = (helpers.NUM_MOCK_EXAMPLES, helpers.NUM_MOCK_EXAMPLES)
    else:  # 5 images per class, the 5th held out.
      dataset = f"folder:{labeled_folder}"
      counts = (8, 2)
    stdout = helpers.run_program(linear_probe,
                                 args + [f"--config.dataset={dataset}"])

  with open(tmp_path / "probe" / "probe.json") as f:
    probe = json.load(f)
  assert 0.0 <= probe["top1"] <= 1.0 and 0.0 <= probe["train_top1"] <= 1.0
  assert (probe["num_train"], probe["num_eval"]) == counts
  assert probe["protocol"] == "linear" and probe["eval_split"] == "validation"
  assert probe["encoder"] == ("random_init" if random_init
                              else f"step {PRETRAINED_STEP}")
  assert probe["dataset"] == dataset
  assert probe["pretrained_workdir"] == os.path.abspath(pretrained_workdir)
  assert f"top-1 {probe['top1']:.4f}" in stdout
  saved = run_config.read(str(tmp_path / "probe"))
  assert (saved.dataset, saved.random_init) == (dataset, random_init)
  if source != "cifar10":  # Dark and light images: told apart by any encoder.
    assert probe["train_top1"] == 1.0 and probe["top1"] == 1.0


def test_probe_resumes_only_its_own_run(pretrained_workdir, labeled_folder,
                                        tmp_path):
  workdir = tmp_path / "probe"
  args = [f"--workdir={workdir}", f"--pretrained_workdir={pretrained_workdir}",
          *FAST, f"--config.dataset=folder:{labeled_folder}",
          "--config.checkpoint_every=10"]
  helpers.run_program(linear_probe, args)
  first = json.loads((workdir / "probe.json").read_text())
  assert sorted(os.listdir(workdir / "checkpoints")) == ["20"]
  # Run again: it resumes from step 20 and ends where it ended.
  helpers.run_program(linear_probe, args)
  again = json.loads((workdir / "probe.json").read_text())
  assert (again["top1"], again["train_top1"]) == (first["top1"],
                                                  first["train_top1"])
  # Another encoder in the same workdir: refused before anything is written.
  with pytest.raises(app.UsageError, match=r"config\.encoder: saved 'step 7' "
                     "vs now 'random_init'"):
    helpers.run_program(linear_probe, args + ["--config.random_init=True"])
  assert json.loads((workdir / "probe.json").read_text()) == again


@pytest.mark.parametrize("args, message", [
    (["--pretrained_workdir={empty}"], "No config.json in .*pretrain_masked"),
    (["--pretrained_workdir={reconstruction}"],
     "'reconstruction' run, not a masked pre-training"),
    (["--config.steps=0"], "config.steps"),
    (["--config.batch_size=0"], "config.batch_size"),
    (["--config.image_size=0"], "config.image_size"),
    (["--config.max_examples=0"], "config.max_examples"),
    (["--config.learning_rate=0"], "config.learning_rate"),
    (["--config.protocol=knn"], "config.protocol must be one of"),
    (["--config.grid=0"], "config.grid"),
    (["--config.grid=3"], "config.grid must divide the 8×8 feature map"),
    (["--config.raw_pixels=True", "--config.random_init=True"],
     "config.random_init must be False when config.raw_pixels"),
    (["--config.raw_pixels=True", "--config.protocol=tran1"],
     "config.protocol must be 'linear' when config.raw_pixels"),
    (["--config.dataset=idx:{empty}/none"], "config.dataset.*not a directory"),
    (["stray"], "stray"),
])
def test_probe_usage_errors_name_the_flag(pretrained_workdir, tmp_path, args,
                                          message):
  reconstruction = str(tmp_path / "reconstruction")
  run_config.write(reconstruction, helpers.tiny_config())
  args = [a.format(empty=tmp_path, reconstruction=reconstruction) for a in args]
  if not any(a.startswith("--pretrained_workdir") for a in args):
    args.append(f"--pretrained_workdir={pretrained_workdir}")
  with pytest.raises(app.UsageError, match=message):
    helpers.run_program(linear_probe, [f"--workdir={tmp_path / 'probe'}", *args])
  assert not (tmp_path / "probe").exists()


def test_probe_needs_a_workdir(pretrained_workdir):
  with pytest.raises(flags.Error, match="--workdir"):
    helpers.run_program(linear_probe,
                        [f"--pretrained_workdir={pretrained_workdir}"])


def test_probe_needs_a_pretraining_unless_raw_pixels(tmp_path):
  with pytest.raises(app.UsageError, match="--pretrained_workdir is needed"):
    helpers.run_program(linear_probe, [f"--workdir={tmp_path / 'probe'}",
                                       "--config.image_size=16"])
  with pytest.raises(app.UsageError, match="config.image_size must be set"):
    helpers.run_program(linear_probe, [f"--workdir={tmp_path / 'probe'}",
                                       "--config.raw_pixels=True"])
  assert not (tmp_path / "probe").exists()
