# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
r"""The reconstruction ablation: FINOLA vs linear (QB-Heat) vs dense decoders.

Trains the reconstruction config (--config, default configs/reconstruct.py,
with its --config.KEY overrides) once per (decoder, stride), each evaluated
on the validation split and on --eval_dir (the Kodak photographs by
default), and prints a markdown table with PSNR, SSIM and the parameter
counts of the map-making part of each decoder (A and B for finola/linear,
the dense layer for dense) and of the upsampler, beside the baselines on the
same images: the mean colour and a PCA code of the same size (C numbers,
fitted on the run's training crops):

  python3 -m experiments.ablation --root=/tmp/finola_ablation \
    --config.steps=400 --config.channels=128

A finished run is not trained again (its workdir resumes at the last step),
so an interrupted ablation resumes where it stopped.
"""

import json
import math
import os

import jax
from absl import app
from absl import flags
from etils import epath

from experiments import reconstruct
from finola_jax.data import input_pipeline
from finola_jax.runner import launch
from finola_jax.runner import trainer
from finola_jax.train import checkpointing

FLAGS = flags.FLAGS
KODAK = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data",
                     "kodak")


def define_flags(flag_values: flags.FlagValues = FLAGS, sys_argv=None) -> None:
  launch.define_config_flag(reconstruct.DEFAULT_CONFIG, flag_values, sys_argv)
  flags.DEFINE_string("root", None, "One workdir per run is made under this.",
                      required=True, flag_values=flag_values)
  flags.DEFINE_list("decoders", ["finola", "linear", "dense"],
                    "Decoders to compare.", flag_values=flag_values)
  flags.DEFINE_list("strides", ["4", "1"], "Feature-map strides to compare.",
                    flag_values=flag_values)
  flags.DEFINE_string("eval_dir", KODAK, "Held-out photographs evaluated after "
                      "training (skipped if missing).", flag_values=flag_values)


def parameter_count(tree) -> int:
  return sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(tree))


def run(config, root: str, decoder: str, stride: int, eval_dir: str) -> dict:
  """Trains and evaluates one row of the table."""
  workdir = str(epath.Path(root) / f"{decoder}_s{stride}")
  config = config.copy_and_resolve_references()
  config.decoder, config.stride = decoder, stride
  validation = reconstruct.train_and_evaluate(config, workdir)
  held_out = {}
  if os.path.isdir(eval_dir):
    held_out = trainer.evaluate_directory(config, workdir, eval_dir)
  _, params = checkpointing.restore_latest_params(workdir)
  map_part = params.get("matrices", params.get("to_map"))
  map_size = config.image_size // stride
  return {"decoder": decoder, "stride": stride, "map_size": map_size,
          "val_psnr": validation["psnr"], "val_ssim": validation["ssim"],
          "kodak_psnr": held_out.get("psnr", float("nan")),
          "kodak_ssim": held_out.get("ssim", float("nan")),
          "pca_val_psnr": validation["pca_psnr"],
          "pca_kodak_psnr": held_out.get("pca_psnr", float("nan")),
          "mean_colour_val_psnr": validation["mean_colour_psnr"],
          "mean_colour_kodak_psnr": held_out.get("mean_colour_psnr",
                                                 float("nan")),
          "map_params": parameter_count(map_part),
          "upsampler_params": parameter_count(params["upsampler"])}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  input_pipeline.hide_accelerators_from_tensorflow()
  with launch.preemption_ends_cleanly():
    rows = [run(FLAGS.config, FLAGS.root, d, int(s), FLAGS.eval_dir)
            for s in FLAGS.strides for d in FLAGS.decoders]
    print(f"\nAblation at {FLAGS.config.steps} steps, C={FLAGS.config.channels}:\n")
    print("| stride | map | decoder | val PSNR | val SSIM | Kodak PSNR | Kodak SSIM | "
          "mean colour val / Kodak PSNR | PCA code val / Kodak PSNR | "
          "map-making params | upsampler params |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
      print(f"| {r['stride']} | {r['map_size']}×{r['map_size']} | {r['decoder']} | "
            f"{r['val_psnr']:.2f} | {r['val_ssim']:.3f} | {r['kodak_psnr']:.2f} | "
            f"{r['kodak_ssim']:.3f} | {r['mean_colour_val_psnr']:.2f} / "
            f"{r['mean_colour_kodak_psnr']:.2f} | {r['pca_val_psnr']:.2f} / "
            f"{r['pca_kodak_psnr']:.2f} | {r['map_params']:,} | "
            f"{r['upsampler_params']:,} |")
    (epath.Path(FLAGS.root) / "ablation.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
  define_flags()
  app.run(main)
