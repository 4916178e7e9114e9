"""Tests of the program experiments/sweep_unroll.py on tiny configurations."""

import json
import math

import numpy as np
import PIL.Image

from experiments import sweep_rows
from experiments import sweep_unroll
from finola_jax.tasks import reconstruction
from tests import helpers


def test_sweep_writes_table_plot_and_finite_rows(tmp_path):
  eval_dir = helpers.write_photo_folder(str(tmp_path / "kodak"), 2)
  root = tmp_path / "sweep"
  stdout = helpers.run_program(sweep_unroll, [
      f"--root={root}", "--decoders=finola,dense", "--sizes=4",
      "--channels=8", f"--eval_dir={eval_dir}", "--max_map_params=200",
      *helpers.override_flags(steps=2, checkpoint_every=2)])
  result = json.loads((root / "sweep.json").read_text())
  [row] = result["rows"]
  assert (row["map_size"], row["decoder"], row["channels"]) == (4, "finola", 8)
  assert row["finite"] and row["steps"] == row["checkpoint_step"] == 2, row
  for key in ("val_psnr", "val_ssim", "kodak_psnr", "kodak_ssim",
              "pca_val_psnr", "pca_kodak_psnr", "max_abs_z_init",
              "max_abs_z_end"):
    assert math.isfinite(row[key]), (key, row)
  assert row["map_params"] == 2 * 8 * 8  # A and B
  assert 0 < row["upsampler_params"] < row["total_params"]
  assert row["code_rank_bound"] == 8  # The encoder's last stage: 2 × 4 = C.
  for split in ("val", "kodak"):
    assert 0 < result["mean_colour"]["4"][split]["psnr"] < 100
  # The dense layer (4·4·8 outputs from 8 inputs, and biases) is over 200.
  assert result["not_run"] == [dict(decoder="dense", channels=8, map_size=4,
                                    map_params=8 * 4 * 4 * 8 + 4 * 4 * 8)]
  table = (root / "sweep.md").read_text()
  assert table.count("\n") == 4 and table in stdout
  assert "| dense | not run: 1,152 map-making parameters" in table
  plot = np.asarray(PIL.Image.open(root / "sweep.png"))
  assert plot.ndim == 3 and min(plot.shape[:2]) > 100


def test_mean_colour_baseline_and_a_diverging_row(tmp_path):
  images = np.random.default_rng(0).uniform(size=(3, 4, 4, 3)).astype(np.float32)
  error = images - images.mean(axis=(1, 2), keepdims=True)
  expected = np.mean(-10 * np.log10(np.mean(error**2, axis=(1, 2, 3))))
  np.testing.assert_allclose(
      reconstruction.mean_colour_scores(images)["psnr"], expected, rtol=1e-5)
  config = sweep_rows.row_config(
      helpers.tiny_config(learning_rate=1e30, steps=4, checkpoint_every=4),
      "linear", 4, 8)
  images = np.full((2, 4, 4, 3), 0.5, np.float32)
  row = sweep_unroll.run_row(config, str(tmp_path / "run"), images, None)
  assert not row["finite"] and math.isnan(row["val_psnr"])
  assert math.isfinite(row["pca_val_psnr"])  # The baseline needs no model.
  assert math.isnan(row["max_abs_z_end"])  # stopped before any checkpoint
  assert math.isfinite(row["max_abs_z_init"])


def test_reference_side_scales_the_matrices_per_unit_of_the_image():
  config = helpers.tiny_config(matrix_init_scale=0.1,
                               matrix_learning_rate_scale=0.5)
  row = sweep_rows.row_config(config, "finola", 64, 8, reference_side=16)
  assert (row.stride, row.image_size, row.channels) == (1, 64, 8)
  assert math.isclose(row.matrix_init_scale, 0.025)
  assert math.isclose(row.matrix_learning_rate_scale, 0.125)
  same = sweep_rows.row_config(config, "finola", 64, 8)
  assert (same.matrix_init_scale, same.matrix_learning_rate_scale) == (0.1, 0.5)


def test_reference_channels_scales_the_matrices_learning_rate_by_one_over_c():
  config = helpers.tiny_config(matrix_init_scale=0.1,
                               matrix_learning_rate_scale=0.5)
  wide = sweep_rows.row_config(config, "linear", 16, 256,
                                 reference_channels=128)
  assert wide.channels == 256
  assert math.isclose(wide.matrix_learning_rate_scale, 0.25)
  assert wide.matrix_init_scale == 0.1  # A ~ N(0, scale²/C) already has 1/C.
  both = sweep_rows.row_config(config, "finola", 64, 64, reference_side=16,
                                 reference_channels=128)
  assert math.isclose(both.matrix_learning_rate_scale, 0.5 * 16 / 64 * 128 / 64)
