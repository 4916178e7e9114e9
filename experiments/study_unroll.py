# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
r"""What keeps a long FINOLA unroll trainable: one change at a time.

The sweep (experiments/sweep_unroll.py) found FINOLA at stride 1 falling
behind the mean colour as the map grows, its largest |z| growing as A and B
learn. This study trains one baseline (--config: a reconstruction config,
by default configs/study_unroll.py: the sweep's 64×64, C=256 row at
stride 1, 300 steps of 16) and one row per **arm**, an arm being the baseline
with exactly one config key changed (by default DEFAULT_ARMS), or the keys
of one change joined by "+":

  --arms=paths=4,pooling=attention,matrix_init_damping=0.01
  --arms=paths=4+channels=64+combine=concat

plus, with --reference_decoders=linear (the default), the baseline with
another decoder (linear: QB-Heat's unroll), so that whatever helps FINOLA is
compared with what the same budget gives the linear unroll. Every row has
the same steps, batch, seed, data and evaluation: the config's. Each row
reports (as sweep_unroll.run_row measures it) PSNR/SSIM on the validation
split and on --eval_dir (Kodak), the PCA code of its size and the mean
colour, the largest |z| at initialization and after training, the spectral
norms and symmetric parts' top eigenvalues of A and B after training, and
its wall time.

Writes ROOT/study.json (after every row), ROOT/study.md and ROOT/study.png
(validation and Kodak PSNR per row, the mean colour and the baseline's PCA
code as lines). On a CPU (docs/results/study.md):

  python3 -m experiments.study_unroll --root=/tmp/finola_study

A finished row is not trained again, so an interrupted study resumes (a
row's wall time is that of the calls that trained it).
"""

from __future__ import annotations

import ast
import json
import math
import os
from typing import Any, Dict, List, Sequence, Tuple

import jax
import matplotlib
import ml_collections
import numpy as np
from absl import app
from absl import flags
from absl import logging
from etils import epath

from experiments import ablation
from experiments import sweep_unroll
from finola_jax import tasks
from finola_jax.runner import launch
from finola_jax.train import run_config

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

FLAGS = flags.FLAGS
DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                              "configs", "study_unroll.py")
# Fixed before the study ran (docs/results/study.md says why each).
DEFAULT_ARMS = ("paths=4", "pooling=attention", "matrix_init_damping=0.01",
                "matrix_learning_rate_scale=0.125")


def define_flags(flag_values: flags.FlagValues = FLAGS, sys_argv=None) -> None:
  launch.define_config_flag(DEFAULT_CONFIG, flag_values, sys_argv)
  flags.DEFINE_string("root", None, "One workdir per row is made under this; "
                      "the table and plot are written here.", required=True,
                      flag_values=flag_values)
  flags.DEFINE_list("arms", list(DEFAULT_ARMS), "KEY=VALUE changes, each "
                    "trained alone against the baseline (--config); one "
                    "change of several keys joins them by '+'.",
                    flag_values=flag_values)
  flags.DEFINE_list("reference_decoders", ["linear"], "The baseline with each "
                    "of these decoders instead of its own.",
                    flag_values=flag_values)
  flags.DEFINE_string("eval_dir", ablation.KODAK, "Held-out photographs "
                      "evaluated after training (skipped if missing).",
                      flag_values=flag_values)


def parse_arm(arm: str, config: ml_collections.ConfigDict) -> Tuple[str, Any]:
  """``"KEY=VALUE"`` → ``(KEY, VALUE)``, VALUE typed like ``config.KEY``.

  Raises:
    run_config.ConfigError: not ``KEY=VALUE``, or an unknown key.
  """
  key, sep, text = arm.partition("=")
  if not sep or not key:
    raise run_config.ConfigError(f"--arms: {arm!r} is not KEY=VALUE.")
  if key not in config:
    raise run_config.ConfigError(f"--arms: {arm!r} names no config key "
                                 f"(config.{key} does not exist).")
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    value = text  # A bare word: a string value such as pooling=attention.
  if isinstance(config[key], float) and isinstance(value, int):
    value = float(value)
  return key, value


def arm_parts(arm: str) -> List[str]:
  """An arm's ``KEY=VALUE`` changes: one, or several joined by ``+`` for one
  change that spans keys (``paths=4+channels=64+combine=concat``: the code
  split over four paths). A ``+`` inside a value (``1e+3``) stays in it."""
  parts: List[str] = []
  for piece in arm.split("+"):
    if parts and "=" not in piece:
      parts[-1] += "+" + piece
    else:
      parts.append(piece)
  return parts


def rows(config: ml_collections.ConfigDict, arms: Sequence[str],
         reference_decoders: Sequence[str]
         ) -> List[Tuple[str, ml_collections.ConfigDict]]:
  """``[(name, config)]``: the baseline, each arm, each reference decoder."""
  planned = [("baseline", config)]
  for arm in arms:
    changed = config.copy_and_resolve_references()
    changes = [parse_arm(part, config) for part in arm_parts(arm)]
    for key, value in changes:
      changed[key] = value
    planned.append(("+".join(f"{key}={value}" for key, value in changes),
                    changed))
  for decoder in reference_decoders:
    changed = config.copy_and_resolve_references()
    changed.decoder = decoder
    planned.append((f"decoder={decoder}", changed))
  for name, row_config in planned:
    try:  # Builds the model without allocating it: every row's check first.
      run_config.validate_model(row_config)
      jax.eval_shape(tasks.create_task(row_config).init_params,
                     jax.random.PRNGKey(0))
    except (run_config.ConfigError, ValueError) as e:
      raise run_config.ConfigError(f"row {name}: {e}") from None
  return planned


def study(config: ml_collections.ConfigDict, root: str, *,
          arms: Sequence[str], reference_decoders: Sequence[str],
          eval_dir: str | None) -> Dict[str, Any]:
  """Trains (or resumes) every row and writes the report.

  Returns what ``ROOT/study.json`` holds: ``rows`` (each
  ``sweep_unroll.run_row``'s measures plus ``name``) and ``mean_colour``
  (``{"val": scores, "kodak": scores}``).
  """
  planned = rows(config, arms, reference_decoders)
  root = epath.Path(root)
  root.mkdir(parents=True, exist_ok=True)
  validation, mean_colour = sweep_unroll.validation_and_mean_colour(
      config, eval_dir)
  result: Dict[str, Any] = {"rows": [], "mean_colour": mean_colour,
                            "stride": config.stride}
  for index, (name, row_config) in enumerate(planned):
    workdir = str(root / f"row{index}_{name.replace('=', '_')}")
    row = sweep_unroll.run_row(row_config, workdir, validation, eval_dir)
    result["rows"].append(dict(row, name=name))
    (root / "study.json").write_text(json.dumps(result, indent=2))
    logging.info("Row done: %s", result["rows"][-1])
  (root / "study.md").write_text(markdown_table(result))
  plot(result, root / "study.png")
  return result


def markdown_table(result: Dict[str, Any]) -> str:
  """The rows as a markdown table, with the differences to the baseline."""
  columns = ("row", "val PSNR", "Δ val", "val SSIM", "Kodak PSNR", "Δ Kodak",
             "PCA code val / Kodak", "max abs z init → end",
             "A, B spectral norm", "A, B symmetric max eig", "finite",
             "wall (min)")
  baseline = result["rows"][0]
  lines = ["| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
  for r in result["rows"]:
    matrices = ("–", "–")
    if "A_spectral_norm_end" in r:
      matrices = (f"{r['A_spectral_norm_end']:.2f}, "
                  f"{r['B_spectral_norm_end']:.2f}",
                  f"{r['A_symmetric_max_eig_end']:.3f}, "
                  f"{r['B_symmetric_max_eig_end']:.3f}")
    lines.append(
        f"| {r['name']} | {r['val_psnr']:.2f} | "
        f"{r['val_psnr'] - baseline['val_psnr']:+.2f} | {r['val_ssim']:.3f} | "
        f"{r['kodak_psnr']:.2f} | "
        f"{r['kodak_psnr'] - baseline['kodak_psnr']:+.2f} | "
        f"{r['pca_val_psnr']:.2f} / {r['pca_kodak_psnr']:.2f} | "
        f"{r['max_abs_z_init']:.3g} → {r['max_abs_z_end']:.3g} | "
        f"{matrices[0]} | {matrices[1]} | {'yes' if r['finite'] else 'no'} | "
        f"{r['wall_s'] / 60:.1f} |")
  colour = result["mean_colour"]
  kodak = colour.get("kodak", {}).get("psnr", math.nan)
  lines.append(f"| mean colour | {colour['val']['psnr']:.2f} | | "
               f"{colour['val']['ssim']:.3f} | {kodak:.2f} |" + " |" * 7)
  return "\n".join(lines) + "\n"


def plot(result: Dict[str, Any], path) -> None:
  """Validation and Kodak PSNR per row, the mean colour and the baseline's
  PCA code as horizontal lines."""
  rows_ = result["rows"]
  positions = np.arange(len(rows_))
  figure, axes = plt.subplots(figsize=(1.3 * len(rows_) + 3, 4.5))
  for offset, split, colour in ((-0.2, "val", "tab:blue"),
                                (0.2, "kodak", "tab:orange")):
    axes.bar(positions + offset, [r[f"{split}_psnr"] for r in rows_], 0.4,
             color=colour, label=f"{split} PSNR")
    axes.axhline(result["mean_colour"].get(split, {}).get("psnr", math.nan),
                 color=colour, ls="--", lw=1, label=f"mean colour ({split})")
    axes.axhline(rows_[0][f"pca_{split}_psnr"], color=colour, ls=":", lw=1,
                 label=f"PCA code of the baseline's size ({split})")
  low = min(r[f"{s}_psnr"] for r in rows_ for s in ("val", "kodak")
            if math.isfinite(r[f"{s}_psnr"]))
  axes.set_ylim(bottom=math.floor(low) - 2)
  axes.set_xticks(positions, [r["name"] for r in rows_], rotation=20,
                  ha="right", fontsize=8)
  axes.set_ylabel("PSNR (dB)")
  axes.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
  first = rows_[0]
  axes.set_title(f"One change at a time: {first['map_size']}×"
                 f"{first['map_size']} images, stride {result['stride']}, "
                 f"C={first['channels']}, "
                 f"{first['steps']} steps of {first['batch_size']}",
                 fontsize=10)
  sweep_unroll.save_figure(figure, path)


def main(argv, flag_values: flags.FlagValues = FLAGS) -> None:
  eval_dir = sweep_unroll.start_program(argv, flag_values.eval_dir)
  with launch.preemption_ends_cleanly():
    try:
      result = study(flag_values.config, flag_values.root,
                     arms=flag_values.arms,
                     reference_decoders=flag_values.reference_decoders,
                     eval_dir=eval_dir)
    except run_config.ConfigError as e:
      raise app.UsageError(str(e)) from None
    print(markdown_table(result))
    print(f"Plot: {epath.Path(flag_values.root) / 'study.png'}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
