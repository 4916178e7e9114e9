"""Tests of the program experiments/reconstruct.py, run as a user runs it.

Command lines go through absl's flag parsing into the program's ``main`` in a
worker subprocess (``helpers.ProgramPool``); the kill test starts and
SIGKILLs ``python -m experiments.reconstruct`` itself.
"""

import json
import os
import re

import numpy as np
import orbax.checkpoint as ocp
import pytest

from finola_jax.train import checkpointing
from tests import helpers
from tests.helpers import programs  # pylint: disable=unused-import (fixture)

PROGRAM = helpers.uses_program("experiments.reconstruct")
STEPS = helpers.STEPS  # helpers.tiny_flags; a checkpoint every 4 steps.
CHECKPOINTS = [4, 8, 12]


def run(programs, workdir, *flags, **overrides):
  return programs.run(PROGRAM, [f"--workdir={workdir}",
                                *helpers.tiny_flags(**overrides), *flags])


def test_tfds_dataset(programs, tmp_path):
  result = run(programs, tmp_path, "--dataset=cifar10",
               f"--data_dir={programs.tfds_dir}",
               "--nocolour_augmentation").check_ok()
  assert re.search(r"Validation split of 'cifar10': psnr=[\d.]+, ssim=", result.stdout)
  assert helpers.checkpoint_steps(tmp_path) == CHECKPOINTS
  assert helpers.train_loss_steps(tmp_path) == list(range(1, STEPS + 1))
  assert os.listdir(tmp_path / "images") == [f"eval_{STEPS:07d}.png"]


def test_folder_dataset_eval_dir_and_eval_only(programs, tmp_path):
  photos = helpers.write_photo_folder(str(tmp_path / "photos"), 6)
  eval_dir = helpers.write_photo_folder(str(tmp_path / "eval"), 3, seed=1)
  workdir = tmp_path / "run"
  flags = [f"--dataset=folder:{photos}", f"--eval_dir={eval_dir}"]
  result = run(programs, workdir, *flags).check_ok()
  assert f"{eval_dir}: psnr=" in result.stdout
  assert "over 3 images" in result.stdout
  with open(workdir / "eval.json") as f:
    trained = json.load(f)
  assert {"psnr", "ssim", "step", "num_images", "eval_dir"} <= set(trained)
  assert trained["step"] == STEPS and trained["num_images"] == 3
  assert trained["eval_dir"] == os.path.abspath(eval_dir)
  assert 0 < trained["psnr"] < 100 and -1 <= trained["ssim"] <= 1
  assert sorted(os.listdir(workdir / "images")) == [
      f"eval_{STEPS:07d}.png", f"eval_dir_{STEPS:07d}.png"]
  records = helpers.read_metrics(workdir)
  assert helpers.train_loss_steps(workdir) == list(range(1, STEPS + 1))
  assert [r["step"] for r in records if "eval/psnr" in r] == [STEPS]

  # --eval_only: the latest checkpoint, evaluated again; nothing trained.
  os.remove(workdir / "eval.json")
  with open(workdir / "metrics.jsonl") as f:
    metrics_before = f.read()
  result = run(programs, workdir, *flags, "--eval_only", steps=20).check_ok()
  assert re.search(rf"Validation split of .*, step={STEPS}\b", result.stdout)
  with open(workdir / "eval.json") as f:
    again = json.load(f)
  assert again == pytest.approx(trained)
  assert helpers.checkpoint_steps(workdir) == CHECKPOINTS
  with open(workdir / "metrics.jsonl") as f:
    assert f.read() == metrics_before


def test_eval_only_without_checkpoint(programs, tmp_path):
  result = run(programs, tmp_path, "--eval_only")
  assert result.error_type == "FileNotFoundError", result
  assert "No checkpoint in" in result.message
  assert not os.path.exists(tmp_path / "config.json")  # Evaluating writes none.


@pytest.fixture(scope="module")
def trained_workdir(programs, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("trained")
  run(programs, workdir).check_ok()
  return workdir


@pytest.mark.parametrize("mode", ["resume", "eval_only"])
@pytest.mark.parametrize("overrides, difference", [
    (dict(channels=16), "channels: saved 8 vs now 16"),
    (dict(stride=4), "stride: saved 2 vs now 4"),
    ({"decoder": "dense"}, "decoder: saved 'finola' vs now 'dense'"),
])
def test_other_model_flags_in_a_used_workdir(programs, trained_workdir, mode,
                                             overrides, difference):
  flags = ["--eval_only"] if mode == "eval_only" else []
  result = run(programs, trained_workdir, *flags, steps=20, **overrides)
  assert result.error_type == "ValueError", result
  assert f"--workdir={trained_workdir} holds a run with other settings" in result.message
  assert difference in result.message
  assert helpers.checkpoint_steps(trained_workdir) == CHECKPOINTS


# Each: flag overrides of tiny_flags, and the flag the error must name.
USAGE_ERRORS = [
    (dict(batch_size=6), "--batch_size"),  # 4 devices.
    (dict(batch_size=0), "--batch_size"),
    (dict(stride=3), "--stride"),
    (dict(stride=4, image_size=18), "--image_size"),
    (dict(image_size=0), "--image_size"),
    (dict(steps=-1), "--steps"),
    (dict(channels=1), "--channels"),
    (dict(encoder_width=0), "--encoder_width"),
    (dict(encoder_depth=-1), "--encoder_depth"),
    (dict(learning_rate=0), "--learning_rate"),
    (dict(warmup_steps=-1), "--warmup_steps"),
    (dict(log_every=0), "--log_every"),
    (dict(eval_every=0), "--eval_every"),
    (dict(checkpoint_every=0), "--checkpoint_every"),
    (dict(keep_checkpoints=0), "--keep_checkpoints"),
    (dict(eval_dir="/no/such/directory"), "--eval_dir"),
    (dict(num_processes=2), "--coordinator_address"),
    (dict(coordinator_address="localhost:1", num_processes=2, process_id=2),
     "--process_id"),
]


@pytest.mark.parametrize("overrides, flag", USAGE_ERRORS)
def test_usage_errors_name_the_flag(programs, tmp_path, overrides, flag):
  result = run(programs, tmp_path / "run", **overrides)
  assert result.status == "usage_error", result
  assert flag in result.message
  assert not os.path.exists(tmp_path / "run")  # Refused before any work.


@pytest.mark.parametrize("flags, expected", [
    (["--decoder=bogus"], "--decoder"),
    (["--precision=float16"], "--precision"),
    (["--steps=many"], "--steps"),
])
def test_invalid_flag_values_name_the_flag(programs, tmp_path, flags, expected):
  result = run(programs, tmp_path, *flags)
  assert result.status == "flags_error", result
  assert expected in result.message


def test_missing_workdir_and_stray_arguments(programs, tmp_path):
  result = programs.run(PROGRAM, helpers.tiny_flags())
  assert result.status == "flags_error" and "--workdir" in result.message
  result = run(programs, tmp_path, "stray")
  assert result.status == "usage_error" and "stray" in result.message


def test_diverging_run_stops_cleanly(programs, tmp_path):
  result = run(programs, tmp_path, learning_rate=1e30, checkpoint_every=1,
               keep_checkpoints=STEPS)
  assert result.status == "exit", result
  match = re.search(r"^Stopped: Non-finite loss or gradient at step (\d+) "
                    r"\(loss=nan\)\. .*the checkpoint at step (\d+) is kept\. "
                    r"Try a lower --learning_rate", result.message)
  assert match, result.message
  bad_step, kept = int(match[1]), int(match[2])
  assert kept == bad_step - 1  # A checkpoint every step, none of the bad one.
  assert helpers.checkpoint_steps(tmp_path) == list(range(1, bad_step))
  manager = checkpointing.create_manager(str(tmp_path), read_only=True)
  for step in helpers.checkpoint_steps(tmp_path):
    state = manager.restore(step, args=ocp.args.StandardRestore())
    assert checkpointing.all_finite(state), step
  manager.close()
  assert all(np.isfinite(r["train/loss"]) for r in helpers.read_metrics(tmp_path)
             if "train/loss" in r)


def test_killed_run_resumes(programs, tmp_path):
  helpers.check_kill_and_resume(programs, PROGRAM, helpers.tiny_flags(),
                                tmp_path)
