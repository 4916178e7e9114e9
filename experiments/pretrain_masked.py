# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
r"""Masked-FINOLA self-supervised pre-training (FINOLA paper, experiment 2).

One quadrant of each image stays visible; the encoder sees only it, and
FINOLA extrapolates the whole feature map from the visible corner; the loss
is the pixel MSE on the three masked quadrants. Offline, the default config
(configs/pretrain_masked.py):

  python3 -m experiments.pretrain_masked --workdir=/tmp/finola_masked

then probe the frozen encoder:

  python3 -m experiments.linear_probe --workdir=/tmp/finola_probe \
    --pretrained_workdir=/tmp/finola_masked

ImageNet, on accelerators:

  python3 -m experiments.pretrain_masked --workdir=$HOME/runs/masked \
    --config=experiments/configs/pretrain_masked_imagenet.py \
    --config.data_dir=$TFDS_DATA_DIR
"""

import os

from absl import app
from absl import flags

from finola_jax.runner import launch
from finola_jax.runner import trainer
from finola_jax.train import run_config

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                              "configs", "pretrain_masked.py")


def define_flags(flag_values: flags.FlagValues = flags.FLAGS,
                 sys_argv=None) -> None:
  launch.define_flags(DEFAULT_CONFIG, flag_values, sys_argv)


def train_and_evaluate(config, workdir: str):
  """Pre-trains a masked ``config`` in ``workdir``; the final metrics."""
  run_config.check_choice(config, "task", ["masked"])
  return trainer.train_and_evaluate(config, workdir)


def main(argv, flag_values: flags.FlagValues = flags.FLAGS) -> None:
  launch.training_main(train_and_evaluate, argv, flag_values)


if __name__ == "__main__":
  define_flags()
  app.run(main)
