# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
r"""Where the normalization matters: reconstruction against unroll length.

Trains the reconstruction config (--config, default configs/reconstruct.py,
with its --config.KEY overrides: the same steps, batch, encoder and
upsampler for every row) at stride 1, so that the map is the image and q is
unrolled image_size/2 steps each way from the centre, once per (channels C,
image size, decoder): FINOLA, linear (QB-Heat: the same unroll without the
normalization) and dense (q → dense layer → map, no unroll). Each row is
evaluated on the validation split and on --eval_dir (the Kodak photographs;
skipped when absent) and reports beside PSNR/SSIM:

* the mean-colour baseline (every image predicted by its own mean colour),
  which a row must beat to have learned anything, and a PCA code of the
  same size (C components fitted on the row's own training crops), the
  linear code a learned one should beat;
* the map-making parameters (A and B, or the dense layer), the upsampler's
  and the model's;
* max |z| of the feature maps of the validation images at initialization
  and after training: an exploding or vanishing linear unroll shows here;
* whether training stayed finite (a non-finite step stops the row: its
  scores are NaN, its max |z| at the end that of its last finite checkpoint);
* in sweep.json, the spectral norms of A and B and the largest eigenvalues
  of their symmetric parts after training (``*_end``), and how many
  dimensions q can span (``code_rank_bound``, which can be below the PCA
  code's size: ``autoencoder.code_rank_bound``).

Writes ROOT/sweep.json (after every row), ROOT/sweep.md (the table) and
ROOT/sweep.png (PSNR against map side, one line per decoder, one panel per
C). On a CPU (the README's table):

  python3 -m experiments.sweep_unroll --root=/tmp/finola_sweep \
    --reference_side=16 --reference_channels=128 \
    --max_map_params=100000000 --config.steps=200 \
    --config.batch_size=16 --config.warmup_steps=50 \
    --config.matrix_learning_rate_scale=0.25 --config.log_every=50 \
    --config.eval_every=100000 --config.checkpoint_every=100

A finished row is not trained again (its workdir resumes at its last step),
so an interrupted sweep resumes where it stopped; a row's ``wall_s`` is that
of the calls that trained it (``WORKDIR/row_wall.json``).
"""

from __future__ import annotations

import json
import math
import time
from typing import Any, Dict, List, Sequence

import jax
import matplotlib
import ml_collections
import numpy as np
from absl import app
from absl import flags
from absl import logging
from etils import epath

from experiments import ablation
from experiments import reconstruct
from experiments import sweep_rows
from finola_jax import tasks
from finola_jax.data import input_pipeline
from finola_jax.models import autoencoder
from finola_jax.models import layers
from finola_jax.runner import launch
from finola_jax.runner import trainer
from finola_jax.tasks import reconstruction
from finola_jax.train import checkpointing
from finola_jax.train import run_config

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

FLAGS = flags.FLAGS
DECODER_STYLES = {"finola": ("tab:blue", "o"), "linear": ("tab:orange", "s"),
                  "dense": ("tab:green", "^")}


def define_flags(flag_values: flags.FlagValues = FLAGS, sys_argv=None) -> None:
  launch.define_config_flag(reconstruct.DEFAULT_CONFIG, flag_values, sys_argv)
  flags.DEFINE_string("root", None, "One workdir per row is made under this; "
                      "the table and plot are written here.", required=True,
                      flag_values=flag_values)
  flags.DEFINE_list("decoders", ["finola", "linear", "dense"],
                    "Decoders to compare.", flag_values=flag_values)
  flags.DEFINE_list("sizes", ["16", "32", "64"], "Image sides, each unrolled "
                    "at stride 1 (map side = image side).",
                    flag_values=flag_values)
  flags.DEFINE_list("channels", ["128", "256"], "Channel counts C.",
                    flag_values=flag_values)
  flags.DEFINE_string("eval_dir", ablation.KODAK, "Held-out photographs "
                      "evaluated after training (skipped if missing).",
                      flag_values=flag_values)
  flags.DEFINE_integer("reference_side", None, "If set, each row's "
                       "matrix_init_scale and matrix_learning_rate_scale are "
                       "multiplied by reference_side / side: A and B then act "
                       "per 1/reference_side of the image, as an unroll with "
                       "step=reference_side/side would, so the map's change "
                       "from q at initialization and under one optimizer step "
                       "is the same at every size.", flag_values=flag_values)
  flags.DEFINE_integer("reference_channels", None, "If set, each row's "
                       "matrix_learning_rate_scale is multiplied by "
                       "reference_channels / C: one Adam step moves A ẑ by "
                       "about C × the rate, so A and B then move as much per "
                       "step at every C.", flag_values=flag_values)
  flags.DEFINE_integer("max_map_params", None, "Rows whose map-making "
                       "layer has more parameters are not trained (listed "
                       "as not run): the dense layer has C·H·W·C.",
                       flag_values=flag_values)


# --------------------------------------------------------------- measures ---


def parameter_counts(params) -> Dict[str, int]:
  """Map-making (A and B, or the dense layer), upsampler and total counts."""
  return {"map_params": ablation.parameter_count(
              params.get("matrices", params.get("to_map"))),
          "upsampler_params": ablation.parameter_count(params["upsampler"]),
          "total_params": ablation.parameter_count(params)}


# -------------------------------------------------------------------- rows ---


def validation_and_mean_colour(config: ml_collections.ConfigDict,
                               eval_dir: str | None):
  """``(images, scores)``: ``config``'s validation images ``[N, S, S, 3]``
  and the mean colour's scores on them and on ``eval_dir``'s photographs
  (``{"val": ..., "kodak": ...}``, no ``"kodak"`` without ``eval_dir``)."""
  images = trainer.images_of(trainer.validation_batches_fn(config)())
  scores = {"val": reconstruction.mean_colour_scores(images)}
  if eval_dir is not None:
    scores["kodak"] = reconstruction.mean_colour_scores(trainer.images_of(
        input_pipeline.create_directory_eval_iterator(
            eval_dir, image_size=config.image_size,
            global_batch_size=config.batch_size)))
  return images, scores


def planned_map_params(config: ml_collections.ConfigDict) -> int:
  """The map-making parameter count of ``config``'s model, allocating none."""
  shapes = jax.eval_shape(tasks.create_task(config).init_params,
                          jax.random.PRNGKey(0))
  return parameter_counts(shapes)["map_params"]


WALL_FILE = "row_wall.json"


def training_wall_s(workdir: str, seconds: float, *, trained: bool) -> float:
  """A row's wall time over the calls that trained it, kept in
  ``WORKDIR/row_wall.json``: a resumed study re-evaluates its finished rows,
  and those seconds are not the row's. NaN for a row trained before the
  file was kept."""
  path = epath.Path(workdir) / WALL_FILE
  total = json.loads(path.read_text())["wall_s"] if path.exists() else None
  if trained:
    total = (total or 0.0) + seconds
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"wall_s": total}))
  return math.nan if total is None else round(total, 1)


def run_row(config: ml_collections.ConfigDict, workdir: str,
            validation_images: np.ndarray, eval_dir: str | None) -> Dict[str, Any]:
  """Trains (or resumes) one row in ``workdir`` and measures it.

  Args:
    config: the row's config (``sweep_rows.row_config``).
    workdir: the row's workdir.
    validation_images: ``[N, S, S, 3]`` the validation split, for ``max |z|``.
    eval_dir: held-out photographs, or ``None``.

  Returns:
    The row of the table (see the module docstring).
  """
  task = tasks.create_task(config)
  # The initial parameters of trainer.train_and_evaluate (step.create_train_state).
  initial = jax.jit(task.init_params)(jax.random.PRNGKey(config.seed))
  step_before = checkpointing.latest_step(workdir)
  start = time.time()
  try:
    validation = reconstruct.train_and_evaluate(config, workdir)
    finite = True
  except trainer.NonFiniteError as error:
    logging.warning("%s: %s", workdir, error)
    finite = False
    validation = dict(trainer.baseline_scores(
        config, trainer.validation_batches_fn(config)()),
                      psnr=math.nan, ssim=math.nan)
  trained = (step_before is None
             or checkpointing.latest_step(workdir) != step_before)
  wall_s = training_wall_s(workdir, time.time() - start, trained=trained)
  held_out = {}
  if finite and eval_dir is not None:
    held_out = trainer.evaluate_directory(config, workdir, eval_dir)
  try:
    step, params = checkpointing.restore_latest_params(workdir)
    max_abs_z_end = sweep_rows.max_abs_map(config, params, validation_images)
  except FileNotFoundError:  # Stopped before its first checkpoint.
    step, params, max_abs_z_end = 0, initial, math.nan
  matrices_end = {f"{name}_end": float(value)
                  for name, value in layers.matrix_metrics(params).items()}
  return dict(
      decoder=config.decoder, channels=config.channels,
      map_size=config.image_size, steps=config.steps, checkpoint_step=step,
      batch_size=config.batch_size, finite=finite,
      val_psnr=validation["psnr"], val_ssim=validation["ssim"],
      kodak_psnr=held_out.get("psnr", math.nan),
      kodak_ssim=held_out.get("ssim", math.nan),
      pca_val_psnr=validation["pca_psnr"],
      pca_kodak_psnr=held_out.get("pca_psnr", math.nan),
      max_abs_z_init=sweep_rows.max_abs_map(config, initial,
                                            validation_images),
      max_abs_z_end=max_abs_z_end,
      code_rank_bound=autoencoder.code_rank_bound(config),
      wall_s=wall_s, **matrices_end,
      **parameter_counts(params))


def sweep(config: ml_collections.ConfigDict, root: str, *,
          decoders: Sequence[str], sizes: Sequence[int],
          channels: Sequence[int], eval_dir: str | None,
          reference_side: int | None = None,
          reference_channels: int | None = None,
          max_map_params: int | None = None) -> Dict[str, Any]:
  """Every row (C outermost, then size, then decoder) and the baselines.

  Writes ``ROOT/sweep.json`` after each row, then ``sweep.md`` and
  ``sweep.png``; returns what ``sweep.json`` holds: ``rows``, ``not_run``
  (the rows over ``max_map_params``: decoder, C, map side, map params) and
  ``mean_colour`` (``{size: {"val": scores, "kodak": scores}}``).
  """
  root = epath.Path(root)
  root.mkdir(parents=True, exist_ok=True)
  result: Dict[str, Any] = {"rows": [], "not_run": [], "mean_colour": {}}
  validation = {}
  for size in sizes:
    validation[size], result["mean_colour"][str(size)] = (
        validation_and_mean_colour(
            sweep_rows.row_config(config, decoders[0], size, channels[0]),
            eval_dir))
  for count in channels:
    for size in sizes:
      for decoder in decoders:
        row_settings = sweep_rows.row_config(config, decoder, size, count,
                                             reference_side, reference_channels)
        map_params = planned_map_params(row_settings)
        if max_map_params is not None and map_params > max_map_params:
          result["not_run"].append(dict(decoder=decoder, channels=count,
                                        map_size=size, map_params=map_params))
          continue
        workdir = str(root / f"c{count}_s{size}_{decoder}")
        row = run_row(row_settings, workdir, validation[size], eval_dir)
        row["beats_mean_colour"] = bool(
            row["val_psnr"] > result["mean_colour"][str(size)]["val"]["psnr"])
        result["rows"].append(row)
        (root / "sweep.json").write_text(json.dumps(result, indent=2))
        logging.info("Row done: %s", row)
  (root / "sweep.json").write_text(json.dumps(result, indent=2))
  (root / "sweep.md").write_text(markdown_table(result))
  plot(result, root / "sweep.png")
  return result


# ------------------------------------------------------------------ report ---


def markdown_table(result: Dict[str, Any]) -> str:
  """The rows of ``result`` as a markdown table, with the mean colour."""
  columns = ("C", "map", "decoder", "val PSNR", "val SSIM", "Kodak PSNR",
             "Kodak SSIM", "mean colour val / Kodak PSNR",
             "PCA code val / Kodak PSNR", "beats mean colour",
             "map-making params", "total params", "max abs z init",
             "max abs z end", "finite")
  lines = ["| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
  for r in result["rows"]:
    baseline = result["mean_colour"][str(r["map_size"])]
    kodak = baseline.get("kodak", {}).get("psnr", math.nan)
    lines.append(
        f"| {r['channels']} | {r['map_size']}×{r['map_size']} | {r['decoder']} | "
        f"{r['val_psnr']:.2f} | {r['val_ssim']:.3f} | {r['kodak_psnr']:.2f} | "
        f"{r['kodak_ssim']:.3f} | {baseline['val']['psnr']:.2f} / {kodak:.2f} | "
        f"{r['pca_val_psnr']:.2f} / {r['pca_kodak_psnr']:.2f} | "
        f"{'yes' if r['beats_mean_colour'] else 'no'} | {r['map_params']:,} | "
        f"{r['total_params']:,} | {r['max_abs_z_init']:.3g} | "
        f"{r['max_abs_z_end']:.3g} | {'yes' if r['finite'] else 'no'} |")
  lines += [f"| {r['channels']} | {r['map_size']}×{r['map_size']} | "
            f"{r['decoder']} | not run: {r['map_params']:,} map-making "
            "parameters over --max_map_params |" + " |" * (len(columns) - 4)
            for r in result.get("not_run", [])]
  return "\n".join(lines) + "\n"


def plot(result: Dict[str, Any], path) -> None:
  """PSNR against map side, one line per decoder, one panel per C.

  Solid: the validation split; dotted: Kodak; grey dashes: the mean colour.
  """
  rows: List[Dict[str, Any]] = result["rows"]
  counts = sorted({r["channels"] for r in rows})
  sizes = sorted(int(s) for s in result["mean_colour"])
  figure, panels = plt.subplots(1, len(counts),
                                figsize=(4.5 * len(counts) + 2, 4.5),
                                squeeze=False, sharey=True)
  for axes, count in zip(panels[0], counts):
    for split, style in (("val", "-"), ("kodak", ":")):
      baseline = [result["mean_colour"][str(s)].get(split, {}).get("psnr",
                                                                   math.nan)
                  for s in sizes]
      axes.plot(sizes, baseline, style, color="0.5", lw=1,
                label=f"mean colour ({split})")
      for decoder, (colour, marker) in DECODER_STYLES.items():
        line = sorted((r["map_size"], r[f"{split}_psnr"]) for r in rows
                      if r["channels"] == count and r["decoder"] == decoder)
        if line:
          axes.plot(*zip(*line), style, color=colour, marker=marker,
                    label=f"{decoder} ({split})")
    axes.set_xscale("log", base=2)
    axes.set_xticks(sizes, [f"{s}×{s}" for s in sizes])
    axes.set_xlabel("map side (stride 1; q walks side/2 steps each way)")
    axes.set_title(f"C = {count}", fontsize=10)
    axes.grid(alpha=0.3)
  panels[0][0].set_ylabel("PSNR (dB)")
  panels[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
  steps = rows[0]["steps"] if rows else 0
  batch = rows[0]["batch_size"] if rows else 0
  figure.suptitle(f"Reconstruction PSNR against unroll length ({steps} steps, "
                  f"batch {batch})", fontsize=10)
  save_figure(figure, path)


def save_figure(figure, path) -> None:
  """Writes ``figure`` to ``path`` as a PNG and closes it."""
  figure.tight_layout()
  with epath.Path(path).open("wb") as f:
    figure.savefig(f, format="png", dpi=100)
  plt.close(figure)


def start_program(argv, eval_dir: str) -> str | None:
  """The common start of the sweep-like programs: no positional arguments,
  quiet logs, TensorFlow off the accelerators; ``eval_dir``, or ``None``
  (said on stdout) when it is not a directory."""
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  launch.quiet_library_logs()
  input_pipeline.hide_accelerators_from_tensorflow()
  if not epath.Path(eval_dir).is_dir():
    print(f"--eval_dir={eval_dir} is not a directory: no Kodak columns.")
    return None
  return eval_dir


def main(argv, flag_values: flags.FlagValues = FLAGS) -> None:
  eval_dir = start_program(argv, flag_values.eval_dir)
  with launch.preemption_ends_cleanly():
    try:
      result = sweep(flag_values.config, flag_values.root,
                     decoders=flag_values.decoders,
                     sizes=[int(s) for s in flag_values.sizes],
                     channels=[int(c) for c in flag_values.channels],
                     eval_dir=eval_dir,
                     reference_side=flag_values.reference_side,
                     reference_channels=flag_values.reference_channels,
                     max_map_params=flag_values.max_map_params)
    except run_config.ConfigError as e:
      raise app.UsageError(str(e)) from None
    config = flag_values.config
    print(f"\nUnroll-length sweep at stride 1, {config.steps} steps, batch "
          f"{config.batch_size}:\n")
    print(markdown_table(result))
    print(f"Plot: {epath.Path(flag_values.root) / 'sweep.png'}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
