# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
r"""Reconstruction from a single vector (FINOLA paper, experiment 1).

An encoder maps each image to one vector q; the decoder unrolls q from the
centre of a feature map with FINOLA (or a baseline, config.decoder) and turns
the map into pixels. The recipes are the config files in configs/; offline,
the default (configs/reconstruct.py):

  python3 -m experiments.reconstruct --workdir=/tmp/finola_recon

The paper's ImageNet 256×256 setting, map at image resolution (s=1):

  python3 -m experiments.reconstruct --workdir=$HOME/runs/recon256 \
    --config=experiments/configs/reconstruct_imagenet256.py \
    --config.data_dir=$TFDS_DATA_DIR
"""

import os

from absl import app
from absl import flags
from absl import logging

from finola_jax import tasks
from finola_jax.models import autoencoder
from finola_jax.models import encoders
from finola_jax.models import layers
from finola_jax.runner import launch
from finola_jax.runner import trainer
from finola_jax.train import run_config

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                              "configs", "reconstruct.py")


def define_flags(flag_values: flags.FlagValues = flags.FLAGS,
                 sys_argv=None) -> None:
  launch.define_flags(DEFAULT_CONFIG, flag_values, sys_argv)


def train_and_evaluate(config, workdir: str):
  """Trains a reconstruction ``config`` in ``workdir``; the final metrics.

  Beside the model's validation PSNR/SSIM they hold the baselines it must
  beat on the same images (``trainer.baseline_scores``: ``mean_colour_*``
  and ``pca_*``, a PCA code of the model's size fitted on its training
  crops).
  """
  run_config.check_choice(config, "task", ["reconstruction"])
  tasks.validate(config)  # before code_rank_bound builds the encoder

  code_size = autoencoder.code_size(config)
  rank_bound = autoencoder.code_rank_bound(config)
  if rank_bound < code_size:
    logging.warning(
        "q's %d numbers span at most %d dimensions: pooling=%r is linear "
        "after the encoder's last %d-channel map (autoencoder.code_rank_bound;"
        " a wider encoder lifts it). The PCA baseline keeps %d components.",
        code_size, rank_bound, layers.multipath(config)[1],
        encoders.map_width(config), code_size)
  metrics = trainer.train_and_evaluate(config, workdir)
  return dict(metrics, **trainer.baseline_scores(
      config, trainer.validation_batches_fn(config)()))


def main(argv, flag_values: flags.FlagValues = flags.FLAGS) -> None:
  launch.training_main(train_and_evaluate, argv, flag_values)


if __name__ == "__main__":
  define_flags()
  app.run(main)
