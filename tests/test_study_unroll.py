"""Tests of experiments/study_unroll.py and the damped initialization of A, B."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import study_unroll
from experiments import sweep_unroll
from finola_jax import tasks
from finola_jax.models import layers
from finola_jax.train import run_config
from tests import helpers


def test_study_trains_baseline_and_each_arm(tmp_path):
  root = tmp_path / "study"
  stdout = helpers.run_program(study_unroll, [
      f"--root={root}", "--arms=paths=2+combine=concat",
      "--reference_decoders=",
      f"--eval_dir={tmp_path / 'absent'}",
      *helpers.override_flags(image_size=4, channels=8, steps=2,
                              checkpoint_every=2, eval_every=2)])
  result = json.loads((root / "study.json").read_text())
  assert [row["name"] for row in result["rows"]] == [
      "baseline", "paths=2+combine=concat"]
  for row in result["rows"]:
    assert row["finite"] and row["checkpoint_step"] == 2, row
    for key in ("val_psnr", "pca_val_psnr", "max_abs_z_end",
                "A_symmetric_max_eig_end", "wall_s"):
      assert math.isfinite(row[key]), (key, row)
  table = (root / "study.md").read_text()
  assert table in stdout
  assert "| paths=2+combine=concat |" in table and "| mean colour |" in table
  assert (root / "study.png").stat().st_size > 1000


def test_rows_are_the_baseline_each_arm_and_each_reference_decoder():
  config = helpers.tiny_config()
  planned = study_unroll.rows(config, ["matrix_init_damping=0.05", "paths=2"],
                              ["linear", "dense"])
  assert [name for name, _ in planned] == [
      "baseline", "matrix_init_damping=0.05", "paths=2", "decoder=linear",
      "decoder=dense"]
  changed = [{key for key in config if row[key] != config[key]}
             for _, row in planned]
  assert changed == [set(), {"matrix_init_damping"}, {"paths"}, {"decoder"},
                     {"decoder"}]


@pytest.mark.parametrize("arm, message", [
    ("paths", "not KEY=VALUE"), ("no_such_key=1", "config.no_such_key"),
    ("pooling=nowhere", "row pooling=nowhere")])
def test_bad_arms_are_refused_before_training(tmp_path, arm, message):
  with pytest.raises(run_config.ConfigError, match=message):
    study_unroll.rows(helpers.tiny_config(), [arm], [])


def test_an_arm_of_several_keys_changes_them_together():
  config = helpers.tiny_config()
  assert study_unroll.arm_parts("paths=4+channels=64+combine=concat") == [
      "paths=4", "channels=64", "combine=concat"]
  assert study_unroll.arm_parts("learning_rate=1e+3+paths=2") == [
      "learning_rate=1e+3", "paths=2"]
  (name, changed), = study_unroll.rows(
      config, ["paths=2+channels=4+combine=concat"], [])[1:]
  assert name == "paths=2+channels=4+combine=concat"
  assert {key for key in config if changed[key] != config[key]} == {
      "paths", "channels", "combine"}
  assert (changed.paths, changed.channels, changed.combine) == (
      2, 4, "concat")


def test_a_row_keeps_the_wall_time_of_the_calls_that_trained_it(tmp_path):
  workdir = str(tmp_path / "row")
  assert sweep_unroll.training_wall_s(workdir, 40.0, trained=True) == 40.0
  # Resumed and finished: re-evaluating it adds nothing.
  assert sweep_unroll.training_wall_s(workdir, 7.0, trained=False) == 40.0
  # Interrupted, then trained on: both calls count.
  assert sweep_unroll.training_wall_s(workdir, 10.0, trained=True) == 50.0
  # Trained before the time was kept: unknown, not the re-evaluation's.
  assert math.isnan(sweep_unroll.training_wall_s(
      str(tmp_path / "older"), 7.0, trained=False))


def test_arm_values_take_the_type_of_the_key():
  config = helpers.tiny_config()
  assert study_unroll.parse_arm("matrix_init_damping=1", config) == (
      "matrix_init_damping", 1.0)
  assert study_unroll.parse_arm("paths=4", config) == ("paths", 4)
  assert study_unroll.parse_arm("pooling=attention", config) == (
      "pooling", "attention")


def test_damping_starts_the_symmetric_parts_negative():
  channels, damping = 64, 0.3
  module = layers.FinolaMatrices(channels, init_scale=0.01, paths=2,
                                 init_damping=damping)
  A, B = module.apply(module.init(jax.random.PRNGKey(0)))
  for matrix in (A, B):
    symmetric = 0.5 * (matrix + jnp.swapaxes(matrix, -1, -2))
    eigenvalues = np.linalg.eigvalsh(np.asarray(symmetric))
    # −damping, moved by the random part's ±2·scale/√C·√C at most.
    np.testing.assert_allclose(eigenvalues, -damping, atol=0.03)
  undamped = layers.FinolaMatrices(channels, init_scale=0.01, paths=2)
  A0, _ = undamped.apply(undamped.init(jax.random.PRNGKey(0)))
  np.testing.assert_allclose(A - A0, -damping * np.eye(channels)[None]
                             * np.ones((2, 1, 1)), atol=1e-6)


def test_skew_init_has_no_symmetric_part_but_the_damping():
  """matrix_init="skew": (G − Gᵀ)/√2 − δ·I from the same draw G as "normal",
  so ẑᵀAẑ = −δ|ẑ|² for every ẑ: undamped, a step turns z, it does not
  stretch it."""
  channels, scale, damping = 64, 0.5, 0.2
  skew = layers.FinolaMatrices(channels, init_scale=scale, paths=2,
                               init_damping=damping, init_kind="skew")
  normal = layers.FinolaMatrices(channels, init_scale=scale, paths=2)
  key = jax.random.PRNGKey(0)
  A, B = (np.asarray(m, np.float64) for m in skew.apply(skew.init(key)))
  G, _ = (np.asarray(m, np.float64) for m in normal.apply(normal.init(key)))
  np.testing.assert_allclose(
      A, (G - np.swapaxes(G, -1, -2)) / np.sqrt(2) - damping * np.eye(channels),
      atol=1e-6)
  for matrix in (A, B):
    np.testing.assert_allclose(matrix + np.swapaxes(matrix, -1, -2),
                               -2 * damping * np.eye(channels)[None]
                               * np.ones((2, 1, 1)), atol=1e-6)
    off_diagonal = matrix[:, ~np.eye(channels, dtype=bool)]
    np.testing.assert_allclose(off_diagonal.std(), scale / np.sqrt(channels),
                               rtol=0.05)
  config = helpers.tiny_config(matrix_init="rotation")
  with pytest.raises(run_config.ConfigError, match="matrix_init"):
    tasks.create_task(config)
  with pytest.raises(ValueError, match="init_kind"):
    layers.FinolaMatrices(8, init_kind="rotation").init(key)


def test_configs_saved_before_the_matrix_keys_build_undamped_normal_ones():
  config = helpers.tiny_config()
  del config["matrix_init_damping"]
  del config["matrix_init"]
  matrices = layers.finola_matrices(config, paths=1)
  assert (matrices.init_damping, matrices.init_kind) == (0.0, "normal")
  config = helpers.tiny_config(matrix_init_damping=-0.1)
  with pytest.raises(run_config.ConfigError, match="matrix_init_damping"):
    run_config.validate_model(config)
