# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Multi-path FINOLA, attention-pooled q, the unroll's watched quantities and
the PCA baseline."""

import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.test_util import check_grads

import finola_jax
from finola_jax import tasks
from finola_jax.models import autoencoder
from finola_jax.models import layers
from finola_jax.models import masked
from finola_jax.tasks import probe
from finola_jax.tasks import reconstruction
from finola_jax.train import run_config
from tests import helpers

PATHS, C, SIDE = 3, 16, 3  # C: a multiple of the kernel's 16.


def _stacked_inputs(seed=0, batch=(2,)):
  keys = jax.random.split(jax.random.PRNGKey(seed), 3)
  q = jax.random.normal(keys[0], batch + (PATHS, C))
  A, B = (0.3 * jax.random.normal(k, (PATHS, C, C)) / np.sqrt(C)
          for k in keys[1:])
  return q, A, B


def _one_by_one(function, x, A, B, axis, **options):
  """The reference: one single-path call per path, stacked."""
  return jnp.stack([function(jnp.take(x, m, axis=axis), A[m], B[m], **options)
                    for m in range(A.shape[0])], axis=axis % x.ndim)


# ----------------------------------------------------------------- library ---


@pytest.mark.parametrize("implementation,path", [
    ("xla", "average"), ("pallas", "vertical_first")])
def test_unroll_paths_equals_separate_unrolls(implementation, path):
  q, A, B = _stacked_inputs()
  options = dict(height=SIDE, width=SIDE + 1, path=path)
  actual = finola_jax.unroll_paths(q, A, B, implementation=implementation,
                                   **options)
  assert actual.shape == (2, PATHS, SIDE, SIDE + 1, C)
  expected = _one_by_one(finola_jax.unroll, q, A, B, -2,
                         implementation="xla", **options)
  np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)


def test_extrapolate_paths_equals_separate_extrapolations():
  _, A, B = _stacked_inputs(batch=())
  block = jax.random.normal(jax.random.PRNGKey(3), (PATHS, 2, 1, C))
  options = dict(height=SIDE, width=SIDE, corner="bottom_right")
  actual = finola_jax.extrapolate_paths(block, A, B, implementation="pallas",
                                        **options)
  expected = _one_by_one(finola_jax.extrapolate, block, A, B, -4,
                         implementation="xla", **options)
  np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)


def test_pallas_runs_all_paths_in_one_launch_per_phase():
  """vmap over the matrices batches the kernel (a leading grid axis of M,
  one barrier counter per path), forward and backward: no loop over paths."""
  q, A, B = _stacked_inputs()
  unroll = functools.partial(finola_jax.unroll_paths, height=SIDE, width=SIDE,
                             implementation="pallas")
  loss = lambda q, A, B: jnp.sum(jnp.sin(unroll(q, A, B)))
  text = str(jax.make_jaxpr(jax.grad(loss, argnums=(0, 1, 2)))(q, A, B))
  one_path = str(jax.make_jaxpr(jax.grad(loss, argnums=(0, 1, 2)))(
      q[:, :1], A[:1], B[:1]))
  # As many launches as one path has (two phases forward, two backward, as
  # traced for each lowering platform), each with a leading grid axis of M.
  launches = text.count("pallas_call[")
  assert launches == one_path.count("pallas_call[") >= 4, launches
  assert text.count(f"grid=({PATHS}, ") == launches
  assert "while[" not in text.split("pallas_call[")[0]


@pytest.mark.parametrize("implementation", ["xla", "pallas"])
def test_multipath_gradients(implementation):
  """Reverse-mode gradients through all paths at once equal those of the
  separate single-path walks (whose VJP test_core checks numerically)."""
  q, A, B = _stacked_inputs()
  weights = jax.random.normal(jax.random.PRNGKey(5), (2, PATHS, SIDE, SIDE, C))

  def loss(function, q, A, B):
    return jnp.sum(weights * jnp.tanh(function(q, A, B)))

  multi = functools.partial(finola_jax.unroll_paths, height=SIDE, width=SIDE,
                            implementation=implementation)
  separate = lambda q, A, B: _one_by_one(
      finola_jax.unroll, q, A, B, -2, height=SIDE, width=SIDE,
      implementation="xla")
  actual = jax.grad(functools.partial(loss, multi), argnums=(0, 1, 2))(q, A, B)
  expected = jax.grad(functools.partial(loss, separate),
                      argnums=(0, 1, 2))(q, A, B)
  for a, e in zip(actual, expected):
    np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-5)
  if implementation == "xla":
    check_grads(multi, (q, A, B), order=1, modes=["rev"], eps=1e-2,
                atol=5e-2, rtol=5e-2)


def test_stacked_shapes_are_checked():
  q, A, B = _stacked_inputs()
  with pytest.raises(ValueError, match=r"shape \[M, C, C\]"):
    finola_jax.unroll_paths(q, A[0], B[0], SIDE, SIDE)
  with pytest.raises(ValueError, match="path axis M=3"):
    finola_jax.unroll_paths(q[:, :2], A, B, SIDE, SIDE)
  with pytest.raises(ValueError, match=r"\[\.\.\., M, h, w, C\]"):
    finola_jax.extrapolate_paths(q, A, B, SIDE, SIDE)


# ------------------------------------------------------------------ models ---


def _model_config(**overrides):
  config = helpers.tiny_config(**overrides)
  return ml_collections.FrozenConfigDict(config)


def _shapes(tree):
  return jax.tree_util.tree_map(jnp.shape, tree)


@pytest.fixture(scope="module")
def images():
  return jax.random.uniform(jax.random.PRNGKey(1), (2, 16, 16, 3))


def test_one_path_is_the_single_path_model(images):
  """paths=1: the parameters of single-path checkpoints (to_q, matrices/A, B
  of [C, C]) and its forward pass, written out here by hand."""
  model = autoencoder.Autoencoder(_model_config(pooling="mean"))
  params = jax.jit(model.init)(jax.random.PRNGKey(0), images)["params"]
  channels = helpers.TINY_MODEL["channels"]
  assert set(params) == {"encoder", "to_q", "matrices", "upsampler"}
  assert _shapes(params["to_q"]) == {"kernel": (channels, channels),
                                     "bias": (channels,)}
  assert _shapes(params["matrices"]) == {"A": (channels, channels),
                                         "B": (channels, channels)}
  # The values of the dense layer to_q that the model held before pooling
  # became a module (flax derives each parameter's key from its path).
  class Before(nn.Module):

    @nn.compact
    def __call__(self, x):
      return nn.Dense(channels, name="to_q")(x)

  before = Before().init(jax.random.PRNGKey(0), jnp.zeros((1, channels)))
  chex.assert_trees_all_equal(before["params"]["to_q"], params["to_q"])

  def by_hand(module, x):
    pooled = jnp.mean(module.encoder(x), axis=(1, 2))
    q = pooled @ params["to_q"]["kernel"] + params["to_q"]["bias"]
    size = module.map_size
    A, B = params["matrices"]["A"], params["matrices"]["B"]
    return module.upsampler(finola_jax.unroll(q, A, B, size, size))

  both = jax.jit(lambda p, x: (model.apply({"params": p}, x),
                              model.apply({"params": p}, x, method=by_hand),
                              model.apply({"params": p}, x,
                                          method=model.encode)))
  actual, expected, q = both(params, images)
  np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-6)
  assert q.shape == (2, channels)


def test_paths_combine_and_watched_quantities(images):
  """M paths: each its own unroll with its own matrices; the maps combined
  by mean or concat; the loss reports their sizes (map_statistics)."""
  task = tasks.create_task(helpers.tiny_config(paths=PATHS, combine="concat"))
  model = task.model
  params = jax.jit(task.init_params)(jax.random.PRNGKey(0))
  channels, size = helpers.TINY_MODEL["channels"], 8
  assert _shapes(params["matrices"]) == {"A": (PATHS, channels, channels),
                                         "B": (PATHS, channels, channels)}
  q, maps, feature_map, pixels, (_, metrics) = jax.jit(lambda p, x: (
      model.apply({"params": p}, x, method=model.encode),
      model.apply({"params": p}, x, method=lambda m, x: m.path_maps(
          m.encode(x))),
      model.apply({"params": p}, x, method=lambda m, x: m.feature_map(
          m.encode(x))),
      model.apply({"params": p}, x),
      task.loss(p, {"image": x}, None)))(params, images)
  assert q.shape == (2, PATHS, channels)
  assert maps.shape == (2, PATHS, size, size, channels)
  A, B = params["matrices"]["A"], params["matrices"]["B"]
  np.testing.assert_allclose(
      maps[:, 1], finola_jax.unroll(q[:, 1], A[1], B[1], size, size),
      rtol=1e-5, atol=1e-5)
  assert feature_map.shape == (2, size, size, PATHS * channels)
  np.testing.assert_array_equal(
      feature_map, jnp.concatenate([maps[:, m] for m in range(PATHS)], -1))
  assert pixels.shape == images.shape  # The decoder reads M·C channels.
  np.testing.assert_allclose(layers.combine_paths(maps, "mean"),
                             jnp.mean(maps, axis=1), rtol=1e-6)
  chex.assert_trees_all_close(
      {k: metrics[k] for k in ("max_abs_z", "mean_abs_z", "edge_to_centre")},
      finola_jax.map_statistics(maps), rtol=1e-5)
  assert set(task.parameter_metrics(params)) == {
      "A_spectral_norm", "B_spectral_norm", "A_symmetric_max_eig",
      "B_symmetric_max_eig"}


@pytest.mark.parametrize("pooling", ["attention", "tokens", "flatten"])
def test_pooling_shapes_and_gradients(pooling):
  pool = layers.InitialVectors(channels=C, paths=PATHS, pooling=pooling)
  feature_map = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 3, 5))
  tokens = jax.random.normal(jax.random.PRNGKey(1), (2, 4, 6))
  params = pool.init(jax.random.PRNGKey(2), feature_map, tokens)["params"]
  if pooling == "attention":
    assert _shapes(params["queries"]) == (PATHS, C)
  q = pool.apply({"params": params}, feature_map, tokens)
  assert q.shape == (2, PATHS, C)
  apply = lambda p, f, t: pool.apply({"params": p}, f, t)
  check_grads(apply, (params, feature_map, tokens), order=1, modes=["rev"],
              eps=1e-2, atol=2e-2, rtol=2e-2)
  if pooling == "flatten":
    # At initialization, the mean pooling's q (every position's weights
    # equal); once they differ, q depends on where each feature is.
    kernel = params["to_q"]["kernel"]
    assert kernel.shape == (9, 5, PATHS * C)
    mean = layers.InitialVectors(channels=C, paths=PATHS)
    np.testing.assert_allclose(
        q, mean.apply({"params": {"to_q": {"kernel": kernel[0],
                                           "bias": params["to_q"]["bias"]}}},
                      feature_map), rtol=1e-5, atol=1e-6)
    trained = jax.tree_util.tree_map(
        lambda w: w + jax.random.normal(jax.random.PRNGKey(3), w.shape),
        params)
    moved = jnp.roll(feature_map, 1, axis=1)
    q = pool.apply({"params": trained}, feature_map)
    flat = np.asarray(feature_map, np.float64).reshape(2, 9, 5)
    np.testing.assert_allclose(
        q.reshape(2, -1),
        np.einsum("bpf,pfk->bk", flat, trained["to_q"]["kernel"]) / 9
        + trained["to_q"]["bias"], rtol=1e-4, atol=1e-5)
    assert np.max(np.abs(pool.apply({"params": trained}, moved) - q)) > 1e-2
  if pooling == "tokens":
    # Token m, through one dense layer shared by the paths, is q_m; the map
    # and the tokens after the first M play no part.
    kernel, bias = params["to_q"]["kernel"], params["to_q"]["bias"]
    np.testing.assert_allclose(q, tokens[:, :PATHS] @ kernel + bias,
                               rtol=1e-5, atol=1e-6)
    other = pool.apply({"params": params}, feature_map + 1.0,
                       tokens.at[:, PATHS:].add(1.0))
    np.testing.assert_array_equal(other, q)
    with pytest.raises(ValueError, match="needs the encoder's tokens"):
      pool.apply({"params": params}, feature_map)
    with pytest.raises(ValueError, match="one token per path"):
      pool.apply({"params": params}, feature_map, tokens[:, :PATHS - 1])


def test_q_norm_scales_each_initial_vector_to_a_learned_size():
  """q_norm="rms": q_m = γ_m ⊙ u_m / rms(u_m), u_m the pooled vector; the
  size of u (here 10× larger weights) no longer reaches q."""
  feature_map = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 3, 5))
  bounded = layers.InitialVectors(channels=C, paths=PATHS, norm="rms")
  params = bounded.init(jax.random.PRNGKey(1), feature_map)["params"]
  assert _shapes(params["q_scale"]) == (PATHS, C)
  np.testing.assert_array_equal(params["q_scale"], 1.0)
  params["q_scale"] = jax.random.uniform(jax.random.PRNGKey(2), (PATHS, C))
  pooled = layers.InitialVectors(channels=C, paths=PATHS).apply(
      {"params": {"to_q": params["to_q"]}}, feature_map)
  pooled = np.asarray(pooled, np.float64)
  expected = params["q_scale"] * pooled / np.sqrt(
      np.mean(pooled**2, axis=-1, keepdims=True) + 1e-6)
  q = bounded.apply({"params": params}, feature_map)
  np.testing.assert_allclose(q, expected, rtol=1e-5, atol=1e-6)
  larger = jax.tree_util.tree_map(lambda w: 10 * w, params["to_q"])
  np.testing.assert_allclose(
      bounded.apply({"params": {**params, "to_q": larger}}, feature_map), q,
      rtol=1e-4, atol=1e-6)
  check_grads(lambda p, f: bounded.apply({"params": p}, f),
              (params, feature_map), order=1, modes=["rev"], eps=1e-2,
              atol=2e-2, rtol=2e-2)


def test_q_norm_cap_bounds_only_initial_vectors_larger_than_z_hat():
  """q_norm="cap": q_m / max(1, rms(q_m)); no parameter of its own."""
  feature_map = jax.random.normal(jax.random.PRNGKey(0), (4, 3, 3, 5))
  capped = layers.InitialVectors(channels=C, paths=PATHS, norm="cap")
  params = capped.init(jax.random.PRNGKey(1), feature_map)["params"]
  assert set(params) == {"to_q"}
  pool = layers.InitialVectors(channels=C, paths=PATHS)
  # Pooled vectors of RMS about 0.02 to 10 across the batch.
  feature_map = feature_map * jnp.array([0.1, 1.0, 3.0, 30.0])[:, None, None,
                                                               None]
  pooled = np.asarray(pool.apply({"params": params}, feature_map), np.float64)
  rms = np.sqrt(np.mean(pooled**2, axis=-1, keepdims=True) + 1e-6)
  assert rms.min() < 1 < rms.max()
  q = capped.apply({"params": params}, feature_map)
  np.testing.assert_allclose(q, pooled / np.maximum(rms, 1.0), rtol=1e-5,
                             atol=1e-7)
  check_grads(lambda p, f: capped.apply({"params": p}, f),
              (params, feature_map[1:]), order=1, modes=["rev"], eps=1e-3,
              atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("pooling,paths,channels,rank", [
    ("mean", 1, 8, 4), ("mean", 2, 8, 4), ("flatten", 1, 24, 16)])
def test_pooled_codes_span_what_the_encoders_last_map_allows(
    pooling, paths, channels, rank):
  """The M·C numbers of q are linear in the encoder's last nonlinear map
  (here 2×2 positions of 4 channels: stages of 2 and 4): in its mean with
  pooling="mean" (4 numbers), in all of it with "flatten" (16). Over many
  images they span exactly that many dimensions, as ``code_rank_bound``
  says (and a PCA code of M·C components is larger)."""
  config = _model_config(encoder_width=1, encoder_depth=2, channels=channels,
                         paths=paths, pooling=pooling, stride=4, image_size=8)
  model = autoencoder.Autoencoder(config)
  images = jax.random.uniform(jax.random.PRNGKey(1), (48, 8, 8, 3))
  params = model.init(jax.random.PRNGKey(0), images[:1])["params"]
  if pooling == "flatten":  # Positions' weights differ once trained.
    kernel = params["to_q"]["kernel"]
    params["to_q"]["kernel"] = kernel + jax.random.normal(
        jax.random.PRNGKey(2), kernel.shape)
  q = np.asarray(model.apply({"params": params}, images,
                             method=autoencoder.Autoencoder.encode),
                 np.float64).reshape(len(images), -1)
  singular = np.linalg.svd(q - q.mean(axis=0), compute_uv=False)
  assert q.shape[1] == paths * channels > rank
  assert np.sum(singular > 1e-4 * singular[0]) == rank
  assert autoencoder.code_rank_bound(config) == rank
  attention = _model_config(encoder_width=1, encoder_depth=2, channels=8,
                            paths=paths, pooling="attention")
  assert autoencoder.code_rank_bound(attention) == paths * 8


@pytest.mark.parametrize("masking", ["quadrant", "random"])
def test_masked_paths(masking):
  """Masked FINOLA: the encoder's map has M·C channels; path m completes
  its C channels with its own A_m, B_m."""
  config = helpers.tiny_config("pretrain_masked", paths=2, combine="concat",
                               masking=masking)
  task = tasks.create_task(config)
  params = jax.jit(task.init_params)(jax.random.PRNGKey(0))
  channels = config.channels
  assert _shapes(params["matrices"])["A"] == (2, channels, channels)
  images = jax.random.uniform(jax.random.PRNGKey(1), (2, 16, 16, 3))
  keys = jax.random.split(jax.random.PRNGKey(2), 2)
  if masking == "random":
    loss, _ = jax.jit(task.loss)(params, {"image": images}, keys)
    assert np.isfinite(loss)
    assert task.features(params, images).shape == (2, 2 * channels)
    # The probes read the whole M·C-channel map of the encoder.
    encoded = probe.masked_finola_encoder(task.model)(params["encoder"], images)
    assert encoded.shape[-1] == 2 * channels
  else:
    size = config.image_size // config.stride
    block = jax.random.normal(jax.random.PRNGKey(3),
                              (2, size // 2, size // 2, 2 * channels))
    corners = jnp.array([3, 0])
    full = jax.jit(lambda p, b, c: task.model.apply(
        {"params": p}, b, c, method=masked.MaskedFinola.complete_from_corner))(
            params, block, corners)
    A, B = params["matrices"]["A"], params["matrices"]["B"]
    for b, corner in enumerate([3, 0]):
      for m in range(2):
        expected = finola_jax.extrapolate(
            block[b, ..., m * channels:(m + 1) * channels], A[m], B[m], size,
            size, corner=finola_jax.CORNERS[corner])
        np.testing.assert_allclose(
            full[b, ..., m * channels:(m + 1) * channels], expected,
            rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name,overrides,key", [
    ("reconstruct", dict(paths=0), "paths"),
    ("reconstruct", dict(pooling="max"), "pooling"),
    ("reconstruct", dict(pooling="tokens"), "pooling"),
    ("reconstruct", dict(combine="sum"), "combine"),
    ("pretrain_masked", dict(pooling="attention"), "pooling"),
    ("reconstruct", dict(q_norm="layer"), "q_norm"),
    ("pretrain_masked", dict(q_norm="rms"), "q_norm"),
    ("reconstruct", dict(upsampler_norm="batch"), "upsampler_norm"),
])
def test_model_keys_are_validated(name, overrides, key):
  with pytest.raises(run_config.ConfigError, match=rf"config\.{key} must"):
    tasks.create_task(helpers.tiny_config(name, **overrides))


def test_configs_saved_before_the_keys_build_the_single_path_model(images):
  config = helpers.tiny_config()
  for key in {**layers.MULTIPATH_DEFAULTS, **layers.Q_NORM_DEFAULTS,
              **layers.UPSAMPLER_NORM_DEFAULTS}:
    del config[key]
  task = tasks.create_task(config)
  shapes = jax.eval_shape(task.init_params, jax.random.PRNGKey(0))
  assert shapes["matrices"]["A"].shape == (config.channels, config.channels)
  assert sorted(shapes["upsampler"]) == [f"Conv_{i}" for i in range(
      len(shapes["upsampler"]))]


@pytest.mark.parametrize("norm,module", [("group", "GroupNorm"),
                                         ("layer", "LayerNorm")])
def test_upsampler_norm_adds_one_normalization_per_hidden_convolution(
    norm, module):
  config = helpers.tiny_config(upsampler_norm=norm)
  task = tasks.create_task(config)
  upsampler = jax.eval_shape(task.init_params,
                             jax.random.PRNGKey(0))["upsampler"]
  convolutions = sorted(k for k in upsampler if k.startswith("Conv_"))
  norms = sorted(k for k in upsampler if k.startswith(module))
  assert len(norms) == len(convolutions) - 1  # not after the last, to pixels
  assert len(convolutions) + len(norms) == len(upsampler)
  assert upsampler[norms[0]]["scale"].shape == (config.decoder_width,)


# ------------------------------------------------- the unroll, watched ---


def test_matrix_statistics_against_numpy():
  A = np.array([[1.0, 2.0], [0.0, -3.0]])
  B = np.array([[0.0, -1.0], [1.0, 0.0]])  # Skew: symmetric part 0.
  stats = finola_jax.matrix_statistics(A, B)
  np.testing.assert_allclose(stats["A_spectral_norm"], np.linalg.norm(A, 2),
                             rtol=1e-6)
  np.testing.assert_allclose(stats["A_symmetric_max_eig"],
                             np.linalg.eigvalsh((A + A.T) / 2)[-1], rtol=1e-6)
  np.testing.assert_allclose(stats["B_spectral_norm"], 1.0, rtol=1e-6)
  np.testing.assert_allclose(stats["B_symmetric_max_eig"], 0.0, atol=1e-7)
  stacked = finola_jax.matrix_statistics(np.stack([A, 2 * A]),
                                         np.stack([B, B]))
  np.testing.assert_allclose(stacked["A_spectral_norm"],
                             2 * np.linalg.norm(A, 2), rtol=1e-6)


def test_map_statistics_against_numpy():
  rng = np.random.default_rng(0)
  maps = rng.normal(size=(2, 3, 5, 4, 6))
  stats = finola_jax.map_statistics(maps)
  magnitude = np.abs(maps).mean(axis=-1)
  border = np.ones((5, 4), bool)
  border[1:-1, 1:-1] = False
  expected = np.mean(magnitude[..., border].mean(-1) / magnitude[..., 2, 2])
  np.testing.assert_allclose(stats["edge_to_centre"], expected, rtol=1e-5)
  np.testing.assert_allclose(stats["max_abs_z"],
                             np.abs(maps).max(axis=(-3, -2, -1)).mean(),
                             rtol=1e-6)
  np.testing.assert_allclose(stats["mean_abs_z"], np.abs(maps).mean(),
                             rtol=1e-5)


# ------------------------------------------------------------ PCA baseline ---


def test_pca_baseline_reconstructs_its_span():
  """Images in the span of k directions: a k-component code reconstructs
  them (almost) exactly, a (k−1)-component one does not."""
  rng = np.random.default_rng(0)
  mean = rng.uniform(0.3, 0.7, size=(1, 6, 6, 3))
  directions = rng.normal(size=(3, 6, 6, 3)) * 0.05

  def draw(count):
    weights = rng.normal(size=(count, 3, 1, 1, 1))
    return np.float32(mean + np.sum(weights * directions[None], axis=1))

  train, images = draw(40), draw(5)
  exact = reconstruction.baseline_psnr(images, reconstruction.fit_pca(train, 3))
  fewer = reconstruction.baseline_psnr(images, reconstruction.fit_pca(train, 2))
  assert exact["pca_psnr"].shape == (5,)
  assert np.all(exact["pca_psnr"] > 60)
  assert np.all(fewer["pca_psnr"] < 50)
  assert np.all(exact["mean_colour_psnr"] < exact["pca_psnr"])
