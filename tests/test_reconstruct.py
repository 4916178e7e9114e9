"""Tests of the program experiments/reconstruct.py.

Command lines are parsed by absl and run in this process
(``helpers.run_program``); the kill test starts and SIGKILLs ``python3 -m
experiments.reconstruct``, and the memory test evaluates in a subprocess
whose peak memory it reads.
"""

import json
import os
import re
import signal
import subprocess
import sys

import chex
import numpy as np
import orbax.checkpoint as ocp
import pytest
from absl import app
from absl import flags

from experiments import pretrain_masked
from experiments import reconstruct
from finola_jax.train import checkpointing
from tests import helpers

STEPS = helpers.STEPS  # A checkpoint every 4 steps.
CHECKPOINTS = [4, 8, 12]


def run(workdir, *args, **overrides) -> str:
  return helpers.run_program(reconstruct, [
      f"--workdir={workdir}", *helpers.override_flags(**overrides), *args])


def test_tfds_dataset(tmp_path):
  with helpers.mock_tfds(str(tmp_path / "tfds")) as data_dir:
    metrics = reconstruct.train_and_evaluate(
        helpers.tiny_config(dataset="cifar10", data_dir=data_dir,
                            colour_augmentation=False), str(tmp_path / "run"))
  assert set(metrics) == {"psnr", "ssim", "mean_colour_psnr", "pca_psnr"}
  assert helpers.checkpoint_steps(tmp_path / "run") == CHECKPOINTS
  assert helpers.train_loss_steps(tmp_path / "run") == list(range(1, STEPS + 1))
  assert os.listdir(tmp_path / "run" / "images") == [f"eval_{STEPS:07d}.png"]


def test_folder_dataset_eval_dir_and_eval_only(tmp_path):
  photos = helpers.write_photo_folder(str(tmp_path / "photos"), 6)
  eval_dir = helpers.write_photo_folder(str(tmp_path / "eval"), 3, seed=1)
  workdir = tmp_path / "run"
  stdout = run(workdir, f"--eval_dir={eval_dir}", dataset=f"folder:{photos}")
  assert re.search(r"Validation split of 'folder:.*':.* psnr=[\d.]+, ssim=", stdout)
  assert re.search(rf"{re.escape(eval_dir)}: .*\bpsnr=[\d.]+", stdout)
  assert "over 3 images" in stdout
  with open(workdir / "eval.json") as f:
    trained = json.load(f)
  assert {"psnr", "ssim", "step", "num_images", "eval_dir", "pca_psnr",
          "mean_colour_psnr"} <= set(trained)
  assert 0 < trained["pca_psnr"] < 100 and 0 < trained["mean_colour_psnr"] < 100
  assert re.search(r"Validation split of .*pca_psnr=[\d.]+", stdout)
  assert trained["step"] == STEPS and trained["num_images"] == 3
  assert trained["eval_dir"] == os.path.abspath(eval_dir)
  assert 0 < trained["psnr"] < 100 and -1 <= trained["ssim"] <= 1
  assert sorted(os.listdir(workdir / "images")) == [
      f"eval_{STEPS:07d}.png", f"eval_dir_{STEPS:07d}.png"]
  assert [r["step"] for r in helpers.read_metrics(workdir)
          if "eval/psnr" in r] == [STEPS]

  # --eval_only reads config.json (no --config needed); nothing is trained.
  os.remove(workdir / "eval.json")
  with open(workdir / "metrics.jsonl") as f:
    metrics_before = f.read()
  stdout = helpers.run_program(reconstruct, [
      f"--workdir={workdir}", "--eval_only", f"--eval_dir={eval_dir}",
      "--config.log_every=7"])  # A run-time key may differ.
  assert re.search(rf"Validation split of .*, step={STEPS}\b", stdout)
  with open(workdir / "eval.json") as f:
    assert json.load(f) == pytest.approx(trained)
  assert helpers.checkpoint_steps(workdir) == CHECKPOINTS
  with open(workdir / "metrics.jsonl") as f:
    assert f.read() == metrics_before

  with pytest.raises(app.UsageError, match="config.channels: saved 8 vs now 16"):
    helpers.run_program(reconstruct, [f"--workdir={workdir}", "--eval_only",
                                      "--config.channels=16"])
  with pytest.raises(app.UsageError, match="config.steps: saved 12 vs now 2400"):
    helpers.run_program(reconstruct, [  # The default config: another run.
        f"--workdir={workdir}", "--eval_only",
        f"--config={reconstruct.DEFAULT_CONFIG}"])


def test_eval_only_without_a_run(tmp_path):
  with pytest.raises(FileNotFoundError, match="No config.json in .*no run"):
    run(tmp_path, "--eval_only")
  assert not os.listdir(tmp_path)  # Evaluating writes nothing.


def _config_errors(program, cases):
  return [(program, helpers.override_flags(**overrides), app.UsageError, key)
          for overrides, key in cases]


# Each: (program, arguments after --workdir, error, what it must name).
COMMAND_LINE_ERRORS = _config_errors(reconstruct, [
    (dict(batch_size=6), "config.batch_size"),  # 4 devices.
    (dict(batch_size=0), "config.batch_size"),
    (dict(stride=3), "config.stride"),
    (dict(stride=4, image_size=18), "config.image_size"),
    (dict(image_size=0), "config.image_size"),
    (dict(steps=-1), "config.steps"),
    (dict(channels=1), "config.channels"),
    (dict(encoder_width=0), "config.encoder_width"),
    (dict(encoder_depth=-1), "config.encoder_depth"),
    (dict(decoder="bogus"), "config.decoder"),
    (dict(precision="float16"), "config.precision"),
    (dict(matmul_precision="fast"), "config.matmul_precision"),
    (dict(path="diagonal"), "config.path"),
    (dict(learning_rate=0), "config.learning_rate"),
    (dict(matrix_learning_rate_scale=0), "config.matrix_learning_rate_scale"),
    (dict(warmup_steps=-1), "config.warmup_steps"),
    (dict(grad_clip_norm=0), "config.grad_clip_norm"),
    (dict(log_every=0), "config.log_every"),
    (dict(eval_every=0), "config.eval_every"),
    (dict(checkpoint_every=0), "config.checkpoint_every"),
    (dict(keep_checkpoints=0), "config.keep_checkpoints"),
    (dict(task="masked"), "config.task"),
]) + _config_errors(pretrain_masked, [
    (dict(image_size=12, stride=4, encoder_depth=2), "config.image_size"),
    (dict(stride=4, encoder_depth=1), "config.encoder_depth"),
    (dict(masking="random", mask_ratio=1.0), "config.mask_ratio"),
    (dict(masking="random", mask_ratio=0.0), "config.mask_ratio"),
    (dict(norm_pix_loss=True, patch_size=5), "config.patch_size"),
    (dict(norm_pix_loss=True, patch_size=0), "config.patch_size"),
    (dict(masking="bogus"), "config.masking"),
    (dict(extrapolation="bogus"), "config.extrapolation"),
    (dict(task="reconstruction"), "config.task"),
]) + [
    (reconstruct, ["--eval_dir=/no/such/directory"], app.UsageError,
     "--eval_dir"),
    (reconstruct, ["--config.dataset=folder:/no/such/folder"], app.UsageError,
     "config.dataset='folder:/no/such/folder': '/no/such/folder' is not a "
     "directory"),
    (reconstruct, ["--config.dataset=coco:/no/such/set"], app.UsageError,
     "config.dataset='coco:/no/such/set': '/no/such/set' is not a directory"),
    (reconstruct, ["--num_processes=2"], app.UsageError,
     "--coordinator_address"),
    (reconstruct, ["--coordinator_address=localhost:1", "--num_processes=2",
                   "--process_id=2"], app.UsageError, "--process_id"),
    (reconstruct, ["stray"], app.UsageError, "stray"),
    (reconstruct, ["--config.steps=many"], flags.Error, "config.steps"),
    (reconstruct, ["--config.chanels=8"], AttributeError,
     'Did you mean "channels"'),
    (reconstruct, ["--config=/no/such/config.py"], OSError,
     "/no/such/config.py"),
]


@pytest.mark.parametrize("program, args, error, message", COMMAND_LINE_ERRORS)
def test_command_line_errors_name_the_flag(tmp_path, program, args, error,
                                           message):
  with pytest.raises(error, match=re.escape(message)):
    helpers.run_program(program, [f"--workdir={tmp_path / 'run'}", *args])
  assert not os.path.exists(tmp_path / "run")  # Refused before any work.


def test_missing_workdir():
  with pytest.raises(flags.Error, match="--workdir"):
    helpers.run_program(reconstruct, [])


def test_diverging_run_stops_cleanly(tmp_path):
  with pytest.raises(SystemExit) as stopped:
    run(tmp_path, learning_rate=1e30, checkpoint_every=1, keep_checkpoints=STEPS)
  message = str(stopped.value.code)
  match = re.search(r"^Stopped: Non-finite loss, gradient or parameters at "
                    r"step (\d+) \(loss=[^)]+\)\. .*the checkpoint at step "
                    r"(\d+) is kept\. "
                    r"Try a lower config.learning_rate", message)
  assert match, message
  bad_step, kept = int(match[1]), int(match[2])
  assert kept == bad_step - 1  # A checkpoint every step, none of the bad one.
  assert helpers.checkpoint_steps(tmp_path) == list(range(1, bad_step))
  manager = checkpointing.create_manager(str(tmp_path), read_only=True)
  for step in helpers.checkpoint_steps(tmp_path):
    state = manager.restore(step, args=ocp.args.StandardRestore())
    chex.assert_tree_all_finite(state)
  manager.close()
  assert all(np.isfinite(r["train/loss"]) for r in helpers.read_metrics(tmp_path)
             if "train/loss" in r)


def test_preempted_run_saves_exits_0_and_resumes(tmp_path, caplog):
  helpers.check_kill_and_resume(reconstruct, helpers.tiny_config(),
                                str(tmp_path), caplog,
                                signal_number=signal.SIGTERM)


MEMORY_CHECK = """
import json, os, sys, threading, time
from tests import helpers
from experiments import pretrain_masked
from experiments import reconstruct

def resident_mib():
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

workdir, small, large = sys.argv[1:]
for directory in (small, large):  # The first compiles and warms up.
  start = peak = resident_mib()
  done = threading.Event()
  def sample():
    global peak
    while not done.wait(0.02):
      peak = max(peak, resident_mib())
  sampler = threading.Thread(target=sample)
  sampler.start()
  helpers.run_program(reconstruct, [f"--workdir={workdir}", "--eval_only",
                                    f"--eval_dir={directory}"])
  done.set()
  sampler.join()
  with open(workdir + "/eval.json") as f:
    print(json.dumps(dict(json.load(f), growth=peak - start)), flush=True)
"""


def test_eval_only_streams_a_folder_larger_than_its_memory(tmp_path):
  """--eval_only --eval_dir on 1,024 images of 192×192 (432 MiB decoded as
  float32) raises the evaluating process's resident memory by less than
  96 MiB, and scores as a folder of its four distinct images does. (Holding
  the folder in memory, as before, takes the decoded size or more.)"""
  size, count, distinct, cap_mib = 192, 1024, 4, 96
  assert count * size * size * 3 * 4 / 2**20 > 4 * cap_mib
  config = helpers.tiny_config(image_size=size, stride=1, encoder_depth=0,
                               channels=2, decoder_width=2, steps=1,
                               checkpoint_every=1)
  workdir = str(tmp_path / "run")
  reconstruct.train_and_evaluate(config, workdir)
  small, large = str(tmp_path / "small"), str(tmp_path / "large")
  helpers.write_photo_folder(small, distinct)
  os.makedirs(large)
  for i in range(count):  # Links to the four photographs: cheap to make.
    os.symlink(os.path.join(small, f"photo{i % distinct:02d}.png"),
               os.path.join(large, f"{i:05d}.png"))

  out = subprocess.run(
      [sys.executable, "-c", MEMORY_CHECK, workdir, small, large],
      capture_output=True, text=True, cwd=helpers.REPO_ROOT,
      env=helpers.program_env())
  assert out.returncode == 0, out.stderr[-3000:]
  small_result, large_result = map(json.loads, out.stdout.splitlines())
  assert large_result["num_images"] == count
  assert large_result["growth"] < cap_mib, large_result
  for key in ("psnr", "ssim"):
    assert large_result[key] == pytest.approx(small_result[key], rel=1e-4)
