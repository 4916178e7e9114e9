"""Tests of the program experiments/wave.py on a tiny, untrained stride-1 run.

The run is a ``WORKDIR/config.json`` and a checkpoint of the initial state
(nothing is trained): the program reads them as it reads a trained run's.
"""

import json

import jax
import ml_collections
import numpy as np
import PIL.Image
import pytest
from absl import app
from absl import flags

from experiments import wave
from finola_jax import tasks
from finola_jax.models import autoencoder
from finola_jax.train import checkpointing
from finola_jax.train import run_config
from finola_jax.train import step as step_lib
from tests import helpers

SIZE = 8  # image side = map side (stride 1)


def tiny_run(workdir, decoder="finola", checkpoint=True):
  """Writes a stride-1 run's config.json and initial checkpoint; its config."""
  config = helpers.tiny_config(image_size=SIZE, stride=1, decoder=decoder)
  run_config.write(str(workdir), config)
  if not checkpoint:
    return config
  manager = checkpointing.create_manager(str(workdir))
  checkpointing.save(manager, 0, step_lib.create_train_state(
      tasks.create_task(config), config))
  manager.close()
  return config


def tiny_model(decoder="finola"):
  """A stride-1 model, its initial parameters and two images."""
  config = helpers.tiny_config(image_size=SIZE, stride=1, decoder=decoder)
  task = tasks.create_task(config)
  # The initial state's parameters: tiny_run's checkpoint compiles the same.
  params = helpers.initial_params(task)
  images = jax.random.uniform(jax.random.PRNGKey(1), (2, SIZE, SIZE, 3))
  return task, params, images


def test_scale_one_is_the_models_reconstruction():
  task, params, images = tiny_model()
  _, pixels = wave.render(task.model, params, images, 1)
  # Equal up to float rounding: XLA may fuse the two programs differently.
  np.testing.assert_allclose(pixels, jax.jit(task.reconstruct)(params, images),
                             rtol=1e-6, atol=1e-6)


def test_fine_map_samples_pixel_centres():
  # With tiny matrices the map is first order in the position: z(x, y) ≈
  # q + x·A q + y·B q (x, y from the origin, linear decoder). Pixel j of the
  # k× map must sit at 1× coordinate (j + 0.5)/k − 0.5.
  model = autoencoder.Autoencoder(ml_collections.FrozenConfigDict(
      helpers.tiny_config(image_size=SIZE, stride=1, decoder="linear")))
  rng = np.random.default_rng(0)
  A, B = (1e-4 * rng.normal(size=(8, 8)).astype(np.float32) for _ in range(2))
  q = rng.normal(size=(8,)).astype(np.float32)
  scale = 4
  fine = np.asarray(wave.fine_map(model, A, B, q, scale))
  coordinate = (np.arange(SIZE * scale) + 0.5) / scale - 0.5 - SIZE // 2
  expected = (q + coordinate[None, :, None] * (A @ q)
              + coordinate[:, None, None] * (B @ q))
  np.testing.assert_allclose(fine, expected, atol=1e-5)


def test_program_writes_speeds_residuals_and_renderings(tmp_path):
  tiny_run(tmp_path)
  stdout = helpers.run_program(wave, [
      f"--workdir={tmp_path}", "--k=2,4", f"--max_size={2 * SIZE}",
      "--num_images=2"])
  out = tmp_path / "wave"
  assert f"Written to {out}" in stdout
  assert {p.name for p in out.iterdir()} == {"speeds.png", "render_k2.png",
                                            "wave.json"}
  result = json.loads((out / "wave.json").read_text())
  assert result["skipped_scales"] == [4] and result["num_images"] == 2
  assert result["speeds"]["channels"] == 8
  # What training logs of the unroll, for the checkpoint.
  _, params = checkpointing.restore_latest_params(str(tmp_path))
  A = np.asarray(params["matrices"]["A"], np.float64)
  np.testing.assert_allclose(result["unroll"]["A_spectral_norm"],
                             np.linalg.norm(A, 2), rtol=1e-4)
  assert result["unroll"]["max_abs_z"] >= result["unroll"]["mean_abs_z"] > 0
  assert np.isfinite(result["speeds"]["max_abs"])
  assert set(result["rendering"]) == {"1", "2"}
  rendering = result["rendering"]["2"]
  for scores in ("finola", "bicubic_of_output", "bicubic_of_photograph"):
    assert np.isfinite(rendering[scores]["psnr"]), scores
  # vertical_first maps satisfy the horizontal equation exactly.
  assert result["rendering"]["1"]["residuals"]["r_x"]["max"] < 1e-4
  assert rendering["residuals"]["r_y"]["finite"]
  grid = np.asarray(PIL.Image.open(out / "render_k2.png"))
  assert grid.shape[1] > 5 * 2 * SIZE  # five labelled columns
  smoothness = result["smoothness"]
  assert set(smoothness) == {"order_0", "order_1", "order_2"}
  # Nested fits: a quadratic explains at least what an affine one does.
  for share in ("map_share", "pixel_share"):
    assert (0 <= smoothness["order_1"][share]
            <= smoothness["order_2"][share] <= 1 + 1e-9), share
  assert all(np.isfinite(entry["decoded"]["psnr"])
             for entry in smoothness.values())


def test_polynomial_fit_against_one_fit_per_image_and_channel():
  """``polynomial_fit`` fits all images and channels at once; here each
  alone, by ``np.polynomial.polynomial.polyvander2d`` least squares."""
  rng = np.random.default_rng(0)
  maps = rng.normal(size=(3, 5, 6, 4))
  y, x = np.meshgrid(np.arange(5) - 2, np.arange(6) - 3, indexing="ij")
  for order in (0, 1, 2):
    # Monomials x^i y^j with i + j <= order.
    vander = np.polynomial.polynomial.polyvander2d(x.ravel(), y.ravel(),
                                                   [order, order])
    powers = [(i, j) for i in range(order + 1) for j in range(order + 1)]
    basis = vander[:, [k for k, (i, j) in enumerate(powers) if i + j <= order]]
    expected = np.empty_like(maps)
    for n in range(3):
      for c in range(4):
        values = maps[n, :, :, c].ravel()
        coefficients, *_ = np.linalg.lstsq(basis, values, rcond=None)
        expected[n, :, :, c] = (basis @ coefficients).reshape(5, 6)
    np.testing.assert_allclose(wave.polynomial_fit(maps, order), expected,
                               atol=1e-10)
  quadratic = 1.0 + 0.5 * x - y + 0.25 * x * y - 0.1 * y * y
  field = np.broadcast_to(quadratic[None, :, :, None], (2, 5, 6, 3))
  assert abs(wave.polynomial_share(field, 2) - 1) < 1e-12
  assert wave.polynomial_share(field, 1) < 0.99
  assert 0 < wave.polynomial_share(maps, 1) < 0.5  # noise: mostly unexplained
  with pytest.raises(ValueError, match="constant over positions"):
    wave.polynomial_share(np.ones((1, 3, 3, 2)), 1)
  with pytest.raises(ValueError, match="order must be"):
    wave.polynomial_fit(maps, 3)


def test_dense_run_and_bad_scale_are_refused(tmp_path):
  tiny_run(tmp_path, decoder="dense", checkpoint=False)
  with pytest.raises(ValueError, match="'dense' decoder"):
    wave.analyse(str(tmp_path), [2])
  with pytest.raises(app.UsageError, match="--k"):
    helpers.run_program(wave, [f"--workdir={tmp_path}", "--k=1"])


def test_missing_workdir():
  with pytest.raises(flags.Error, match="--workdir"):
    helpers.run_program(wave, [])
