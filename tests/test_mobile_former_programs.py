"""Every program with a Mobile-Former encoder, in this process.

``mobile_former_tiny`` on 16×16 images (the tiny settings of
``tests/helpers.py``, feature stride 2): masked pre-training for two steps
(its workdir is the encoder the probes and the detector read), the linear
probe and detection, and (abstractly) a reconstruction train
step with the tokens as initial vectors; then the config keys: ``encoder="resnet"`` builds
the models of configs saved before the keys, and bad values are refused.
"""

import json

import jax
import ml_collections
import numpy as np
import pytest

from experiments import detect
from experiments import linear_probe
from experiments import pretrain_masked
from finola_jax import tasks
from finola_jax.models import autoencoder
from finola_jax.models import encoders
from finola_jax.models import layers
from finola_jax.models import mobile_former
from finola_jax.tasks import probe
from finola_jax.train import checkpointing
from finola_jax.train import run_config
from tests import helpers
from tests import test_detection as detection_tests
from tests.test_detection import canvases  # pylint: disable=unused-import

TINY = "mobile_former_tiny"
STEPS = 2
RUN = dict(encoder=TINY, steps=STEPS, checkpoint_every=STEPS)


def _metrics_losses(workdir):
  return [r["train/loss"] for r in helpers.read_metrics(workdir)
          if "train/loss" in r]


@pytest.fixture(scope="module")
def pretrained_workdir(tmp_path_factory):
  """pretrain_masked with the tiny Mobile-Former, two steps."""
  workdir = str(tmp_path_factory.mktemp("masked_mf"))
  helpers.run_program(pretrain_masked, [f"--workdir={workdir}",
                                        *helpers.override_flags(**RUN)])
  return workdir


def test_masked_pretraining(pretrained_workdir):
  losses = _metrics_losses(pretrained_workdir)
  assert len(losses) == STEPS and np.all(np.isfinite(losses))
  step, params = checkpointing.restore_latest_params(pretrained_workdir)
  assert step == STEPS
  # The encoder's map (D channels) is projected to the C channels FINOLA
  # extrapolates.
  dims, _ = mobile_former.feature_dims(TINY)
  channels = helpers.TINY_MODEL["channels"]
  assert params["block_projection"]["kernel"].shape == (dims, channels)
  assert "tokens" in params["encoder"]


def test_reconstruction_from_the_tokens():
  """pooling="tokens": token m of the encoder, through one dense layer
  d → C, is q_m (``layers.InitialVectors``, tested in test_multipath.py);
  the train step's loss and gradient trace to the tokens. Abstractly:
  compiling this encoder's step once more would cost the suite a minute
  (the reconstruct program with it was run when this test was written)."""
  task = tasks.create_task(helpers.tiny_config(
      "reconstruct", encoder=TINY, pooling="tokens", paths=2))
  params = jax.eval_shape(task.init_params, jax.random.PRNGKey(0))
  _, token_dim = mobile_former.feature_dims(TINY)
  assert params["to_q"]["kernel"].shape == (token_dim,
                                            helpers.TINY_MODEL["channels"])
  images = jax.ShapeDtypeStruct((2, 16, 16, 3), np.float32)
  (loss, _), grads = jax.eval_shape(
      jax.value_and_grad(task.loss, has_aux=True), params, {"image": images},
      None)
  assert loss.shape == () and grads["encoder"]["tokens"].shape == (
      mobile_former.SIZES[TINY].num_tokens, token_dim)


def test_flattened_map_bounds_the_code_rank():
  """pooling="flatten" on a Mobile-Former: q is linear in its whole last
  map, P positions × D channels (here 2×2 at ``encoder_stride=8``, not the
  ResNet's halvings), so ``code_rank_bound`` is P·D when M·C is larger;
  P·D is read off the built model's ``to_q`` weights. Abstract: nothing
  compiled."""
  config = ml_collections.FrozenConfigDict(helpers.tiny_config(
      "reconstruct", encoder=TINY, encoder_stride=8, pooling="flatten",
      channels=1024))
  images = jax.ShapeDtypeStruct((1, 16, 16, 3), np.float32)
  params = jax.eval_shape(autoencoder.Autoencoder(config).init,
                          jax.random.PRNGKey(0), images)["params"]
  positions, dims, code = params["to_q"]["kernel"].shape
  assert (positions, dims) == (4, mobile_former.feature_dims(TINY)[0])
  assert autoencoder.code_rank_bound(config) == positions * dims < code


def test_linear_probe(pretrained_workdir, tmp_path):
  """The linear protocol (tran-1 reads the map's positions as it does for the
  ResNet: covered by test_probe_protocols; left out here for suite time)."""
  folder = helpers.write_labeled_folder(str(tmp_path / "labeled"))
  helpers.run_program(linear_probe, [
      f"--workdir={tmp_path / 'probe'}",
      f"--pretrained_workdir={pretrained_workdir}", "--config.steps=20",
      "--config.batch_size=2", "--config.protocol=linear",
      "--config.grid=2", f"--config.dataset=folder:{folder}"])
  with open(tmp_path / "probe" / "probe.json") as f:
    result = json.load(f)
  assert result["encoder"] == f"step {STEPS}"
  # Dark and light images: told apart by any encoder.
  assert result["train_top1"] == 1.0 and result["top1"] == 1.0


def test_readouts_are_what_the_classifier_reads():
  dims, token_dim = mobile_former.feature_dims(TINY)
  feature_map = jax.random.uniform(jax.random.PRNGKey(0), (2, 8, 8, dims))
  tokens = jax.random.normal(jax.random.PRNGKey(1), (2, 2, token_dim))
  np.testing.assert_allclose(
      probe.linear_readout((feature_map, tokens), 1),
      mobile_former.classifier_features(feature_map, tokens), rtol=1e-6)
  grid = probe.linear_readout((feature_map, tokens), 2)
  assert grid.shape == (2, 4 * dims + token_dim)
  np.testing.assert_array_equal(grid[:, -token_dim:], tokens[:, 0])
  np.testing.assert_array_equal(probe.token_readout((feature_map, tokens), 2),
                                probe.token_readout(feature_map, 2))


def test_detection_program(pretrained_workdir, canvases, tmp_path):
  workdir = str(tmp_path / "det")
  stdout = helpers.run_program(
      detect, detection_tests.program_args(workdir, canvases, steps=STEPS) + [
          f"--pretrained_workdir={pretrained_workdir}"])
  assert f"step {STEPS})" in stdout
  _, trained = checkpointing.restore_latest_params(workdir)
  _, pretrained = checkpointing.restore_latest_params(pretrained_workdir)
  helpers.assert_trees_equal(trained["backbone"], pretrained["encoder"])
  # The head reads the encoder's map (not its tokens).
  assert trained["head"]["Conv_0"]["kernel"].shape[2] == (
      mobile_former.feature_dims(TINY)[0])


# ------------------------------------------------------------- config keys ---


@pytest.mark.parametrize("name", ["reconstruct", "pretrain_masked"])
def test_resnet_gives_the_models_of_configs_saved_before_the_keys(name):
  shapes = lambda config: jax.eval_shape(
      tasks.create_task(config).init_params, jax.random.PRNGKey(0))
  config = helpers.tiny_config(name, encoder="resnet")
  old = helpers.tiny_config(name)
  for key in encoders.ENCODER_DEFAULTS:
    del old[key]
  new_shapes = shapes(config)
  assert new_shapes == shapes(old)
  # The encoder is the ResNet itself, under its own parameter names.
  downsample = layers.log2(config.stride) if name == "pretrain_masked" else None
  resnet = layers.ResNetEncoder(config.encoder_width, config.encoder_depth,
                                config.channels, downsample=downsample)
  assert new_shapes["encoder"] == jax.eval_shape(
      resnet.init, jax.random.PRNGKey(0),
      np.zeros((1, 8, 8, 3), np.float32))["params"]
  assert set(new_shapes) <= {"encoder", "matrices", "upsampler", "to_q"}


@pytest.mark.parametrize("name, overrides, key", [
    ("reconstruct", dict(encoder="vgg"), "encoder"),
    ("reconstruct", dict(encoder_stride=2), "encoder_stride"),
    ("reconstruct", dict(encoder=TINY, encoder_stride=3), "encoder_stride"),
    ("reconstruct", dict(encoder=TINY, encoder_stride=64), "encoder_stride"),
    ("reconstruct", dict(encoder=TINY, image_size=24, stride=8,
                         encoder_stride=16), "image_size"),
    ("reconstruct", dict(encoder=TINY, pooling="tokens", paths=3), "paths"),
    ("pretrain_masked", dict(encoder=TINY, encoder_stride=4),
     "encoder_stride"),
    ("pretrain_masked", dict(encoder=TINY, image_size=128, stride=64),
     "stride"),
])
def test_bad_encoder_keys_are_refused(name, overrides, key):
  with pytest.raises(run_config.ConfigError, match=rf"config\.{key} must"):
    tasks.create_task(helpers.tiny_config(name, **overrides))

