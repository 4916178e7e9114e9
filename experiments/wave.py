# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
r"""The PDE view of a trained reconstruction model, as a program.

Reads ``WORKDIR/config.json`` and the latest readable checkpoint of an
``experiments.reconstruct`` run with a ``finola`` or ``linear`` decoder and
writes to ``WORKDIR/wave/``:

* the sizes of the unrolled maps of the first ``--num_images`` validation
  images and the spectral quantities of ``A``, ``B``, as training logs them
  (``wave.json``'s ``unroll``);
* ``speeds.png``: the wave speeds, the eigenvalues of ``A B⁻¹``, in the
  complex plane (summary in ``wave.json``);
* the PDE residuals (:func:`finola_jax.pde_residual`) of the unrolled maps of
  the first ``--num_images`` validation images, at 1× and at every
  rendering scale (``wave.json``);
* how smooth the 1× map is (``wave.json``'s ``smoothness``): the share of
  its spatial variance that a per-image, per-channel polynomial of degree
  1 or 2 in the position explains, the same share of the images' pixels at
  the map's size, and the scores of decoding the fitted maps instead
  (:func:`smoothness_report`);
* ``render_k{k}.png`` for each ``--k`` with ``k·image_size <= --max_size``:
  a resolution-free rendering. The same ``q`` is unrolled with ``step=1/k``
  into a k× larger map and decoded by the same decoder into a k× larger
  image; columns: input | 1× | bicubic k× of the 1× output | FINOLA k× |
  photograph k×. Scores (PSNR/SSIM against the photograph at k×) go to
  ``wave.json``. The rendering needs a stride-1 model for its pixels to
  match the map's grid; a stride-s model renders too (the upsampler decodes
  any map size), at k·s pixels per map step.

Example (the stride-1 model of the README)::

  python3 -m experiments.wave --workdir=/tmp/finola_recon_s1

Sampling grid of the k× map: pixel ``j`` of a k× image covers the same area
as the photograph's k× resize and ``jax.image.resize``'s bicubic output,
whose pixel centres sit at 1× coordinate ``(j + 0.5)/k − 0.5``. The 1× map
has ``q`` at integer coordinate ``c`` (its centre); the k× map puts at index
``k·c`` the vector one FINOLA step of size ``(k − 1)/(2k)`` up and left of
``q`` and walks from there in steps of ``1/k``, so index ``j`` sits at
``c − (k − 1)/(2k) + (j − k·c)/k = (j + 0.5)/k − 0.5``. At k = 1 the shift is
zero and the rendering is the model's own reconstruction.
"""

from __future__ import annotations

import functools
import io
import json
from typing import Any, Dict, Mapping, Sequence

import jax
import jax.numpy as jnp
import matplotlib
import ml_collections
import numpy as np
from absl import app
from absl import flags
from etils import epath

import finola_jax
from finola_jax.data import input_pipeline
from finola_jax.models import autoencoder
from finola_jax.models import layers
from finola_jax.tasks import reconstruction
from finola_jax.train import checkpointing
from finola_jax.train import run_config
from finola_jax.train import writers

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

FLAGS = flags.FLAGS
GRID_IMAGES = 6  # validation images drawn in each PNG grid


def define_flags(flag_values: flags.FlagValues = FLAGS, sys_argv=None) -> None:
  """The run-time options; the model is the workdir's (``config.json``)."""
  del sys_argv  # No --config: there are no config overrides to read.
  flags.DEFINE_string("workdir", None, "Workdir of a trained "
                      "experiments.reconstruct run (finola or linear decoder); "
                      "results go to WORKDIR/wave/.", required=True,
                      flag_values=flag_values)
  flags.DEFINE_list("k", ["2", "4"], "Rendering scales k > 1.",
                    flag_values=flag_values)
  flags.DEFINE_integer("max_size", 256, "Scales whose image side "
                       "k·image_size exceeds this are skipped.",
                       flag_values=flag_values)
  flags.DEFINE_integer("num_images", 16, "The first this many validation "
                       "images are rendered and scored.",
                       flag_values=flag_values)
  flags.DEFINE_integer("batch_size", 8, "Images rendered at a time.",
                       flag_values=flag_values)


# ---------------------------------------------------------------- the run ---


def load_run(workdir: str):
  """The model, latest readable parameters and config of a reconstruction run.

  Returns:
    ``(model, params, step, config)``: the :class:`autoencoder.Autoencoder`
    that ``WORKDIR/config.json`` describes and its checkpointed parameters.

  Raises:
    ValueError: the run's decoder has no matrices ``A``, ``B`` (``dense``).
  """
  config = run_config.read(workdir)
  model = autoencoder.Autoencoder(ml_collections.FrozenConfigDict(config))
  if config.decoder not in ("finola", "linear"):
    raise ValueError(f"{workdir} holds a {config.decoder!r} decoder; the wave "
                     "view needs the matrices A, B of a 'finola' or 'linear' one.")
  if layers.multipath(config)[0] != 1:
    raise ValueError(f"{workdir} holds a {layers.multipath(config)[0]}-path "
                     "model; the wave view reads one pair A, B (one path).")
  step, params = checkpointing.restore_latest_params(workdir)
  return model, params, step, config


def matrices(params) -> tuple[jax.Array, jax.Array]:
  """``(A, B)`` of an autoencoder's parameters."""
  return (jnp.asarray(params["matrices"]["A"]),
          jnp.asarray(params["matrices"]["B"]))


def validation_images(config: ml_collections.ConfigDict, image_size: int,
                      num_images: int) -> np.ndarray:
  """The first ``num_images`` of the config's validation split at
  ``image_size``: float32 ``[N, S, S, 3]``.

  The same crops at every size (antialiased resizes of the same boxes), so
  the split at ``k·S`` is the photograph at k× of the split at ``S``.
  """
  batches = input_pipeline.create_eval_iterator(
      config.dataset, image_size=image_size, global_batch_size=1,
      data_dir=config.data_dir, process_index=0, process_count=1,
      local_device_count=1, max_examples=num_images)
  return np.concatenate([b["image"][0][b["mask"][0] > 0] for b in batches])


# ------------------------------------------------------------ wave speeds ---


def speed_summary(A, B) -> Dict[str, Any]:
  """Summary statistics of the wave speeds ``λ = eig(A B⁻¹)``.

  A speed is counted real when ``|Im λ| <= 1e-5·max(1, |λ|)`` (float32
  eigenvalues of a real matrix come as exact conjugate pairs or reals, up to
  rounding).
  """
  speeds = np.asarray(finola_jax.wave_speeds(A, B))
  magnitude = np.abs(speeds)
  real = np.abs(speeds.imag) <= 1e-5 * np.maximum(1.0, magnitude)
  return {
      "channels": int(speeds.size),
      "num_real": int(real.sum()),
      "max_abs": float(magnitude.max()),
      "median_abs": float(np.median(magnitude)),
      "min_abs": float(magnitude.min()),
      "fraction_abs_below_1": float(np.mean(magnitude < 1.0)),
      "real_range": [float(speeds.real.min()), float(speeds.real.max())],
      "imag_max_abs": float(np.abs(speeds.imag).max()),
      "condition_number_B": float(np.linalg.cond(np.asarray(B, np.float64))),
      "norm_A": float(np.linalg.norm(np.asarray(A), 2)),
      "norm_B": float(np.linalg.norm(np.asarray(B), 2)),
  }


def plot_speeds(A, B, path, title: str = "") -> Dict[str, Any]:
  """Scatters the wave speeds in the complex plane; returns their summary.

  Two panels: every speed, and a zoom on those within twice the 90th
  percentile of ``|λ|`` (a nearly singular ``B`` gives a few very fast
  speeds that would squash the rest into a dot).
  """
  speeds = np.asarray(finola_jax.wave_speeds(A, B))
  summary = speed_summary(A, B)
  radius = 2.0 * float(np.quantile(np.abs(speeds), 0.9))
  circle = np.exp(1j * np.linspace(0, 2 * np.pi, 256))
  figure, panels = plt.subplots(1, 2, figsize=(10, 5))
  for axes, limit in zip(panels, (None, radius)):
    axes.plot(circle.real, circle.imag, "--", color="0.6", lw=0.8, label="|λ| = 1")
    axes.axhline(0, color="0.85", lw=0.6)
    axes.axvline(0, color="0.85", lw=0.6)
    axes.scatter(speeds.real, speeds.imag, s=10, alpha=0.8, label="λ")
    axes.set_xlabel("Re λ")
    axes.set_ylabel("Im λ")
    axes.set_aspect("equal", adjustable="datalim")
    if limit is None:
      axes.set_title("all speeds", fontsize=9)
    else:
      outside = int(np.sum(np.abs(speeds) > limit))
      axes.set_xlim(-limit, limit)
      axes.set_ylim(-limit, limit)
      axes.set_aspect("equal", adjustable="box")
      axes.set_title(f"|λ| ≤ {limit:.3g} ({outside} outside)", fontsize=9)
    axes.legend(loc="upper right", fontsize=8)
  figure.suptitle(
      f"{title}\nwave speeds λ = eig(A B⁻¹), ∂ζ/∂x = λ ∂ζ/∂y (C={summary['channels']}): "
      f"{summary['num_real']} real, max |λ| {summary['max_abs']:.3g}, median "
      f"{summary['median_abs']:.3g}, cond(B) {summary['condition_number_B']:.3g}",
      fontsize=9)
  figure.tight_layout()
  buffer = io.BytesIO()
  figure.savefig(buffer, format="png", dpi=110)
  plt.close(figure)
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(buffer.getvalue())
  return summary


# --------------------------------------------------------------- residuals ---


def residual_statistics(maps, A, B, *, origin=None, step=1.0) -> Dict[str, Any]:
  """Per-map PDE residuals ``(r_x, r_y)`` summarized over the maps.

  ``vertical_first`` maps have ``r_x = 0`` by construction; their ``r_y``
  says how far the map is from also satisfying the vertical equation away
  from the origin column (whether the two walks commute).
  """
  r_x, r_y = finola_jax.pde_residual(maps, A, B, origin=origin, step=step)
  stats = {}
  for name, values in (("r_x", r_x), ("r_y", r_y)):
    values = np.asarray(values, np.float64)
    stats[name] = {"mean": float(values.mean()), "median": float(np.median(values)),
                   "max": float(values.max()), "finite": bool(np.isfinite(values).all())}
  return stats


# -------------------------------------------------------------- rendering ---


def fine_map(model: autoencoder.Autoencoder, A, B, q, scale: int) -> jax.Array:
  """``q`` unrolled with ``step = 1/scale`` into a ``scale``× larger map.

  See the module docstring for the sampling grid. At ``scale = 1`` this is
  the model's own feature map.
  """
  size = model.map_size
  row, col = size // 2, size // 2
  # The model's own numerics (compute dtype, matmul precision, kernel).
  unroll = functools.partial(
      layers.autoregress, finola_jax.unroll, matrices=(A, B), config=model.config,
      normalized=model.config.decoder == "finola", path=model.config.path)
  shift = (scale - 1) / (2 * scale)
  if shift:
    # The map value at (row − shift, col − shift), reached from q as every
    # other cell is: the walks of `path` with a step of `shift`.
    q = unroll(q, height=2, width=2, origin=(1, 1), step=shift)[..., 0, 0, :]
  return unroll(q, height=scale * size, width=scale * size,
                origin=(scale * row, scale * col), step=1.0 / scale)


def encode(model, params, images) -> jax.Array:
  return model.apply({"params": params}, images, method=model.encode)


def decode(model, params, feature_map) -> jax.Array:
  """The model's decoder (upsampler) on a feature map of any size."""
  return model.apply({"params": params}, feature_map,
                     method=lambda module, z: module.upsampler(z))


@functools.partial(jax.jit, static_argnames=("model", "scale"))
def render(model, params, images, scale: int):
  """``(fine map, pixels)`` of ``images`` rendered at ``scale``× resolution."""
  A, B = matrices(params)
  feature_map = fine_map(model, A, B, encode(model, params, images), scale)
  return feature_map, decode(model, params, feature_map).astype(jnp.float32)


@functools.partial(jax.jit, static_argnames=("model",))
def unroll_statistics(model, params, images) -> Dict[str, jax.Array]:
  """What training logs of the unroll (``train/max_abs_z``, ...), for
  ``images``: ``finola_jax.map_statistics`` of their path maps and
  ``finola_jax.matrix_statistics`` of ``A``, ``B``."""
  maps = model.apply({"params": params}, images,
                     method=lambda m, x: m.path_maps(m.encode(x)))
  return dict(finola_jax.map_statistics(maps), **layers.matrix_metrics(params))


def bicubic(images, scale: int) -> jax.Array:
  n, h, w, c = images.shape
  return jax.image.resize(images, (n, scale * h, scale * w, c), "bicubic")


def _scores(prediction, target) -> Dict[str, float]:
  """Mean PSNR/SSIM of ``prediction`` against ``target``."""
  quality = _image_quality(jnp.asarray(prediction), jnp.asarray(target))
  return {k: float(jnp.mean(v)) for k, v in quality.items()}


# Jitted: dm_pix's SSIM run op by op compiles dozens of small programs.
_image_quality = jax.jit(reconstruction.image_quality)


def _in_batches(fn, images, batch_size):
  """``fn`` over ``images`` in batches; outputs concatenated along axis 0."""
  outputs = [jax.device_get(fn(images[i:i + batch_size]))
             for i in range(0, len(images), batch_size)]
  return jax.tree_util.tree_map(lambda *xs: np.concatenate(xs), *outputs)


def rendering_report(model, params, images, photographs: Mapping[int, np.ndarray],
                     base_map, base, *, batch_size: int = 8
                     ) -> tuple[Dict[str, Any], Dict[int, Any]]:
  """Scores of the k× renderings and the columns of their picture.

  Args:
    model, params: the trained autoencoder.
    images: ``[N, S, S, 3]`` validation images (the model's input).
    photographs: ``{k: [N, kS, kS, 3]}``, the same images at k×.
    base_map, base: :func:`render` of ``images`` at 1× (map and pixels).
    batch_size: images rendered at a time.

  Returns:
    ``(report, columns)``: ``report["1"]`` scores the model's reconstruction;
    ``report[str(k)]`` for ``k > 1`` scores FINOLA k×, bicubic k× of the 1×
    output and, as a ceiling for any 1× image, bicubic k× of the 1×
    photograph, each against the k× photograph; ``consistency_psnr`` is the
    PSNR between FINOLA k× averaged down to 1× and the 1× output; and the
    residuals of the k× maps (step ``1/k``). ``columns[k]`` are the PNG
    grid's columns (input | 1× | bicubic k× | FINOLA k× | photograph k×).
  """
  A, B = matrices(params)
  normalized = model.config.decoder == "finola"
  report: Dict[str, Any] = {"1": _scores(base, images)}
  if normalized:
    report["1"]["residuals"] = residual_statistics(base_map, A, B)
  columns = {}
  for scale, photograph in sorted(photographs.items()):
    fine_maps, fine = _in_batches(
        lambda x, k=scale: render(model, params, x, k), images, batch_size)
    upsampled = np.asarray(bicubic(base, scale))
    n, size = len(images), images.shape[1]
    down = fine.reshape(n, size, scale, size, scale, 3).mean(axis=(2, 4))
    entry = {"finola": _scores(fine, photograph),
             "bicubic_of_output": _scores(upsampled, photograph),
             "bicubic_of_photograph": _scores(bicubic(images, scale), photograph),
             "consistency_psnr": _scores(down, np.clip(base, 0, 1))["psnr"],
             "max_abs_z": float(np.abs(fine_maps).max())}
    if normalized:
      centre = model.map_size // 2
      entry["residuals"] = residual_statistics(
          fine_maps, A, B, origin=(scale * centre, scale * centre), step=1.0 / scale)
    report[str(scale)] = entry
    nearest = lambda x, k=scale: np.repeat(np.repeat(x, k, axis=1), k, axis=2)
    columns[scale] = [nearest(images), nearest(base), upsampled, fine, photograph]
  return report, columns


# --------------------------------------------------------- map smoothness ---


def polynomial_fit(maps, order: int) -> np.ndarray:
  """Each image's and channel's least-squares fit of ``maps`` ``[N, h, w, C]``
  by a polynomial of degree ``order`` (0, 1 or 2) in the position: ``a``,
  ``a + b·x + c·y``, or with ``x², x·y, y²`` added. Returns the fitted maps
  (float64, the shape of ``maps``)."""
  if order not in (0, 1, 2):
    raise ValueError(f"order must be 0, 1 or 2, got {order}.")
  maps = np.asarray(maps, np.float64)
  n, h, w, c = maps.shape
  y, x = np.meshgrid(np.arange(h) - h // 2, np.arange(w) - w // 2,
                     indexing="ij")
  x, y = x.ravel(), y.ravel()
  terms = [np.ones_like(x), x, y, x * x, x * y, y * y][:(1, 3, 6)[order]]
  basis = np.stack(terms, axis=1).astype(np.float64)  # [h·w, terms]
  values = maps.reshape(n, h * w, c).transpose(1, 0, 2).reshape(h * w, n * c)
  coefficients, *_ = np.linalg.lstsq(basis, values, rcond=None)
  return (basis @ coefficients).reshape(h * w, n, c).transpose(1, 0, 2).reshape(
      maps.shape)


def polynomial_share(maps, order: int) -> float:
  """The share of the maps' spatial variance (each image's map minus its
  mean over positions) that :func:`polynomial_fit` of ``order`` explains:
  ``1 − Σ (map − fit)² / Σ (map − mean)²``. Near 1 at order 1: the map is
  little more than a gradient over the positions."""
  maps = np.asarray(maps, np.float64)
  spread = np.sum((maps - maps.mean(axis=(1, 2), keepdims=True))**2)
  if spread == 0:
    raise ValueError("The maps are constant over positions: no spatial "
                     "variance to explain.")
  return float(1 - np.sum((maps - polynomial_fit(maps, order))**2) / spread)


def smoothness_report(model, params, images, feature_map) -> Dict[str, Any]:
  """How smooth the decoder's map is, and what its roughness is worth.

  For orders 1 and 2: :func:`polynomial_share` of ``feature_map`` ``[N, h,
  w, C]`` (the model's map of ``images``), the same share of the images'
  own pixels resized to ``h×w`` (the reference: how smooth the pictures
  are at the map's resolution), and the PSNR/SSIM of decoding the fitted
  map instead (with order 0, the map's mean at every position).
  """
  n, h, w, _ = feature_map.shape
  pixels = jax.image.resize(images, (n, h, w, images.shape[-1]), "linear",
                            antialias=True)
  report: Dict[str, Any] = {}
  for order in (0, 1, 2):
    fitted = jnp.asarray(polynomial_fit(feature_map, order), jnp.float32)
    entry = {"decoded": _scores(decode(model, params, fitted), images)}
    if order:
      entry["map_share"] = polynomial_share(feature_map, order)
      entry["pixel_share"] = polynomial_share(pixels, order)
    report[f"order_{order}"] = entry
  return report


# ------------------------------------------------------------------ main ---


def analyse(workdir: str, scales: Sequence[int], *, max_size: int = 256,
            num_images: int = 16, batch_size: int = 8) -> Dict[str, Any]:
  """Writes ``WORKDIR/wave/`` (see the module docstring); returns ``wave.json``.

  Scales ``k`` with ``k·image_size > max_size`` are skipped (listed under
  ``skipped_scales``).
  """
  model, params, step, config = load_run(workdir)
  out = epath.Path(workdir) / "wave"
  A, B = matrices(params)
  result: Dict[str, Any] = {"checkpoint_step": step, "decoder": config.decoder,
                            "image_size": config.image_size,
                            "stride": config.stride, "channels": config.channels}
  result["speeds"] = plot_speeds(
      A, B, out / "speeds.png",
      title=f"{epath.Path(workdir).name} ({config.decoder}), step {step}")
  result["skipped_scales"] = [k for k in scales
                              if k * config.image_size > max_size]
  scales = [k for k in scales if k * config.image_size <= max_size]
  images = validation_images(config, config.image_size, num_images)
  photographs = {k: validation_images(config, k * config.image_size, num_images)
                 for k in scales}
  result["num_images"] = len(images)
  result["unroll"] = {k: float(v) for k, v in
                      unroll_statistics(model, params, images).items()}
  base_map, base = _in_batches(lambda x: render(model, params, x, 1), images,
                               batch_size)
  result["rendering"], columns = rendering_report(
      model, params, images, photographs, base_map, base,
      batch_size=batch_size)
  result["smoothness"] = smoothness_report(model, params, images, base_map)
  for scale, column in columns.items():
    names = ("input", "1x", f"bicubic {scale}x", f"FINOLA {scale}x",
             f"photograph {scale}x")
    grid = writers.image_grid([c[:GRID_IMAGES] for c in column], names)
    writers.save_png(out / f"render_k{scale}.png", grid)
  (out / "wave.json").write_text(json.dumps(result, indent=2))
  return result


def main(argv, flag_values: flags.FlagValues = FLAGS) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  scales = [int(k) for k in flag_values.k]
  if any(k < 2 for k in scales):
    raise app.UsageError(f"--k={flag_values.k}: every scale must be >= 2.")
  input_pipeline.hide_accelerators_from_tensorflow()
  result = analyse(flag_values.workdir, scales, max_size=flag_values.max_size,
                   num_images=flag_values.num_images,
                   batch_size=flag_values.batch_size)
  print(json.dumps(result, indent=2))
  print(f"Written to {epath.Path(flag_values.workdir) / 'wave'}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
