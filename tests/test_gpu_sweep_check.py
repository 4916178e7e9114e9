"""Tests of tools/gpu_sweep_check.py on a tiny row, on the CPU."""

import argparse
import json
import math
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from experiments import sweep_rows
from experiments.configs import reconstruct as reconstruct_config
from finola_jax.data import sources
from tests import helpers
from tools import gpu_sweep_check


def test_rows_are_scaled_as_the_sweeps():
  args = argparse.Namespace(
      batch=16, warmup=50, reference_side=16, reference_channels=128)
  ours = gpu_sweep_check.row_config(args, "finola", 128, 256, 0.25, 1000)
  base = reconstruct_config.get_config()
  # As the sweep's documented command pins them (docs/results/sweep.md).
  base.update(steps=1000, batch_size=16, warmup_steps=50,
              matrix_learning_rate_scale=0.25,
              **reconstruct_config.BEFORE_STUDY)
  sweeps = sweep_rows.row_config(base, "finola", 128, 256,
                                 reference_side=16, reference_channels=128)
  assert ours.to_dict() == sweeps.to_dict()


def test_crops_are_images_of_the_stored_photographs():
  # A canvas whose red channel is the column index: a crop's red values
  # run monotonically along each row (left to right, or flipped).
  canvas = np.zeros((1, 40, 60, 3), np.float32)
  canvas[..., 0] = np.arange(60) / 60
  make = gpu_sweep_check.make_batch_fn(
      jax.numpy.asarray(canvas), jax.numpy.array([40.0]),
      jax.numpy.array([60.0]), batch=6, size=8)
  images = np.asarray(make(jax.random.PRNGKey(0))["image"])
  assert images.shape == (1, 6, 8, 8, 3)
  assert images.min() >= 0 and images.max() <= 1
  for image in images[0]:
    channel = image[..., np.argmax(image.max(axis=(0, 1)))]  # the red one
    steps = np.diff(channel, axis=1)
    assert np.all(steps >= -1e-6) or np.all(steps <= 1e-6)
    every_row_alike = np.broadcast_to(channel[:1], channel.shape)
    np.testing.assert_allclose(channel, every_row_alike, atol=1e-6)


def test_a_tiny_row_writes_finite_json(tmp_path, capsys, monkeypatch):
  # Two small photographs (storing all thirteen compiles a resize for
  # each) and the tests' tiny encoder and decoder: quicker to compile.
  monkeypatch.setattr(sources, "EMBEDDED_TRAIN_PHOTOS", ("coins", "page"))
  tiny = helpers.tiny_config()
  monkeypatch.setattr(gpu_sweep_check.reconstruct_config, "get_config",
                      tiny.copy_and_resolve_references)
  validation = str(tmp_path / "validation.npz")
  gpu_sweep_check.main([f"--write_validation={validation}", "--sizes=16"])
  assert np.load(validation)["val16"].shape == (15, 16, 16, 3)
  # The budget counts from main's start, whenever the module was imported
  # (here, as in a long test session, the clock has moved on by an hour).
  clock = time.monotonic
  monkeypatch.setattr(time, "monotonic", lambda: clock() + 3600)
  out = tmp_path / "out"
  gpu_sweep_check.main([str(out), f"--validation={validation}",
                        "--rows=8:16:finola:0.5:2", "--batch=2", "--warmup=1",
                        "--budget_s=600"])
  [row] = json.loads((out / "sweep_check.json").read_text())
  assert (row["decoder"], row["size"], row["channels"]) == ("finola", 16, 8)
  assert row["finite"] and set(row["psnr"]) == {"0", "2"}, row
  assert "stopped_at_step" not in row
  for key in ("mean_colour_psnr", "max_abs_z_init", "max_abs_z_end",
              "step_ms", "final_psnr"):
    assert math.isfinite(row[key]), (key, row)
  assert math.isclose(row["matrix_lr_scale"], 0.5 * 16 / 16 * 128 / 8)
  assert json.loads(capsys.readouterr().out.splitlines()[-1]) == row


@pytest.mark.parametrize("rows, message", [
    ("8:32:finola", "has no val32"),
    ("8:16:qb_heat", "decoder 'qb_heat' is not one of"),
    ("8:16", "expected C:SIDE:DECODER"),
])
def test_bad_rows_are_refused_before_training(tmp_path, capsys, rows, message):
  validation = str(tmp_path / "validation.npz")
  np.savez(validation, val16=np.zeros((15, 16, 16, 3), np.uint8))
  with pytest.raises(SystemExit):
    gpu_sweep_check.main([str(tmp_path / "out"), f"--validation={validation}",
                          f"--rows={rows}"])
  assert message in capsys.readouterr().err
  assert not (tmp_path / "out").exists()


def test_a_missing_validation_file_is_refused(tmp_path, capsys):
  with pytest.raises(SystemExit):
    gpu_sweep_check.main([str(tmp_path / "out"),
                          f"--validation={tmp_path / 'none.npz'}",
                          "--rows=8:16:finola"])
  assert "is not a file: write it with --write_validation" in (
      capsys.readouterr().err)


def test_it_runs_without_tensorflow():
  # As on a bare accelerator image: any import of TensorFlow fails. The
  # photographs and the recipe come from finola_jax.data all the same.
  code = """if True:
    import runpy, sys
    sys.modules["tensorflow"] = sys.modules["tensorflow_datasets"] = None
    sys.argv = ["gpu_sweep_check.py", "--help"]
    try:
      runpy.run_path("tools/gpu_sweep_check.py", run_name="__main__")
    except SystemExit as e:
      assert not e.code, e.code
    from finola_jax.data import sources
    print(sources.embedded_photo("coins").shape)
  """
  out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                       text=True, cwd=helpers.REPO_ROOT, env=helpers.program_env())
  assert out.returncode == 0, out.stderr
  assert "Sweep rows at the paper's map sizes" in out.stdout
  assert out.stdout.splitlines()[-1] == "(303, 384, 3)"
