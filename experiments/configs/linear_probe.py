# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
r"""Probe of a masked-FINOLA encoder, offline.

scikit-learn's 8×8 handwritten digits, upscaled to the pre-training's image
size: a check that the features carry information, too easy to rank
encoders (configs/probe_fashion_mnist.py does that). The default config of
``experiments.linear_probe``:

  python3 -m experiments.linear_probe --workdir=/tmp/finola_probe \
    --pretrained_workdir=/tmp/finola_masked
"""

import ml_collections
from ml_collections import config_dict


def get_config() -> ml_collections.ConfigDict:
  """Every setting of a probe; the encoder's come from its pre-training."""
  config = ml_collections.ConfigDict()
  config.task = "linear_probe"
  # "digits" (offline), "idx:/path" (MNIST-family IDX files), "folder:/path"
  # (one subfolder per class) or a labeled tfds name (cifar10, imagenet2012).
  config.dataset = "digits"
  config.data_dir = config_dict.placeholder(str)
  # None: the pre-training's image size.
  config.image_size = config_dict.placeholder(int)
  config.max_examples = config_dict.placeholder(int)  # per split; None: all
  # The control: a randomly initialized encoder of the same architecture.
  config.random_init = False
  # The baseline: the image is the feature map (protocol "linear" only; set
  # grid to image_size to read every pixel).
  config.raw_pixels = False
  # "linear": frozen encoder, linear classifier on the map pooled to
  # grid×grid; "tran1": frozen encoder, one transformer block on the grid²
  # pooled positions as tokens; "finetune": "linear" with the encoder
  # trained at encoder_lr_scale × learning_rate.
  config.protocol = "linear"
  config.grid = 1  # 1: the global mean of the feature map
  # The budget, the same for every protocol and encoder: AdamW steps
  # (warm-up, cosine decay) on random batches of the training split.
  config.steps = 2000
  config.batch_size = 256  # also the batch of feature extraction
  config.learning_rate = 1e-3
  config.warmup_steps = 100
  config.weight_decay = 1e-4
  config.encoder_lr_scale = 0.1
  config.num_heads = 4  # tran1
  config.mlp_ratio = 4  # tran1: the MLP's width in channels
  # Readout statistics and train_top1 come from at most this many evenly
  # spaced training examples.
  config.monitor_examples = 10_000
  config.seed = 0  # the random encoder, the head's init and the batches
  # Bookkeeping (may change when a killed probe is resumed).
  config.checkpoint_every = 500
  return config
