# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
r"""The reconstruction ablation: FINOLA vs linear (QB-Heat) vs dense decoders.

Runs ``experiments.reconstruct`` once per (decoder, stride) at equal steps,
C and encoder, each evaluated on the validation split and on --eval_dir
(the Kodak photographs by default), and prints a markdown table with PSNR,
SSIM and the parameter counts of the map-making part of each decoder (A and
B for finola/linear, the dense layer for dense) and of the upsampler:

  python -m experiments.ablation --root=/tmp/finola_ablation --steps=600

A finished run (a checkpoint at --steps in its workdir) is not trained again,
so an interrupted ablation resumes where it stopped.
"""

import json
import math
import os
import subprocess
import sys

from absl import app
from absl import flags
import jax

from finola_jax.train import checkpointing

flags.DEFINE_string("root", None, "One workdir per run is made under this.", required=True)
flags.DEFINE_list("decoders", ["finola", "linear", "dense"], "Decoders to compare.")
flags.DEFINE_list("strides", ["4", "1"], "Feature-map strides to compare.")
flags.DEFINE_integer("steps", 600, "Training steps of every run.")
flags.DEFINE_string("eval_dir", os.path.join(os.path.dirname(__file__), "..", "..",
                                             "shared", "data", "kodak"),
                    "Held-out photographs evaluated after training.")
flags.DEFINE_list("extra_flags", [], "Flags passed to every run, e.g. "
                  "--extra_flags=--channels=128,--image_size=32.")
FLAGS = flags.FLAGS


def parameter_count(tree) -> int:
  return sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(tree))


def last_eval(workdir: str) -> dict:
  """The last ``eval/*`` record of a run's metrics.jsonl."""
  result = {}
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    for line in f:
      record = json.loads(line)
      if "eval/psnr" in record:
        result = record
  return result


def run(decoder: str, stride: str) -> dict:
  workdir = os.path.join(FLAGS.root, f"{decoder}_s{stride}")
  command = [sys.executable, "-m", "experiments.reconstruct", f"--workdir={workdir}",
             f"--decoder={decoder}", f"--stride={stride}", f"--steps={FLAGS.steps}",
             *FLAGS.extra_flags]
  if os.path.isdir(FLAGS.eval_dir):
    command.append(f"--eval_dir={FLAGS.eval_dir}")
  subprocess.run(command, check=True)
  _, params = checkpointing.restore_latest_params(workdir)
  held_out = {}
  if os.path.isdir(FLAGS.eval_dir):
    with open(os.path.join(workdir, "eval.json")) as f:
      held_out = json.load(f)
  validation = last_eval(workdir)
  with open(os.path.join(workdir, "config.json")) as f:
    map_size = json.load(f)["image_size"] // int(stride)
  map_part = params.get("matrices", params.get("to_map"))
  return {"decoder": decoder, "stride": int(stride), "map_size": map_size,
          "val_psnr": validation["eval/psnr"], "val_ssim": validation["eval/ssim"],
          "kodak_psnr": held_out.get("psnr", float("nan")),
          "kodak_ssim": held_out.get("ssim", float("nan")),
          "map_params": parameter_count(map_part),
          "upsampler_params": parameter_count(params["upsampler"])}


def main(argv):
  del argv
  rows = [run(d, s) for s in FLAGS.strides for d in FLAGS.decoders]
  print(f"\nAblation at {FLAGS.steps} steps ({' '.join(FLAGS.extra_flags) or 'default flags'}):\n")
  print("| stride | map | decoder | val PSNR | val SSIM | Kodak PSNR | Kodak SSIM | "
        "map-making params | upsampler params |")
  print("|---|---|---|---|---|---|---|---|---|")
  for r in rows:
    print(f"| {r['stride']} | {r['map_size']}×{r['map_size']} | {r['decoder']} | "
          f"{r['val_psnr']:.2f} | {r['val_ssim']:.3f} | {r['kodak_psnr']:.2f} | "
          f"{r['kodak_ssim']:.3f} | {r['map_params']:,} | {r['upsampler_params']:,} |")
  with open(os.path.join(FLAGS.root, "ablation.json"), "w") as f:
    json.dump(rows, f, indent=2)


if __name__ == "__main__":
  app.run(main)
