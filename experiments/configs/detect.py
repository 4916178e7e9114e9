# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
r"""Detection transfer: a CenterNet-style head on a pre-trained encoder.

The default of ``experiments.detect``: COCO 2017 in its own layout
(``DIR/annotations/instances_{train2017,val2017}.json``, images in
``DIR/train2017/``, ``DIR/val2017/``), letterboxed to 512×512, on an
accelerator:

  python3 -m experiments.detect --workdir=$HOME/runs/detect_coco \
    --config.dataset=coco:$COCO_DIR --pretrained_workdir=$HOME/runs/masked

or COCO 2017 as TFDS prepared it under $TFDS_DATA_DIR:
``--config.dataset=coco/2017 --config.data_dir=$TFDS_DATA_DIR``.

The encoder's architecture and stride come from the pre-training's
config.json (recorded here as config.backbone); its weights from the
pre-training's newest checkpoint, or a random initialization
(config.random_init: the control).
"""

import ml_collections
from ml_collections import config_dict


def get_config() -> ml_collections.ConfigDict:
  """Every setting of a detection run (see the comments)."""
  config = ml_collections.ConfigDict()
  config.task = "detection"

  # Data: "coco:DIR" (COCO's layout) or a prepared TFDS detection set
  # ("coco/2017", read from data_dir). Splits: None is the dataset's own,
  # train2017/val2017 for "coco:DIR", train/validation for TFDS.
  config.dataset = config_dict.placeholder(str)
  config.data_dir = config_dict.placeholder(str)  # tfds data_dir
  config.train_split = config_dict.placeholder(str)
  config.eval_split = config_dict.placeholder(str)
  config.image_size = 512  # longer side scaled to it, padded to a square
  config.max_boxes = 100  # boxes per image, padded (COCO's most is 93)
  config.max_eval_examples = config_dict.placeholder(int)  # None: all

  # Backbone. random_init: the pre-training's architecture, random weights.
  config.random_init = False
  config.freeze_backbone = True
  config.encoder_lr_scale = 0.1  # backbone's rate when not frozen
  # Set by the program from --pretrained_workdir: its config (the
  # encoder's architecture) and path.
  config.backbone = None
  config.pretrained_workdir = config_dict.placeholder(str)

  # Head and decoding.
  config.head_width = 128
  config.top_k = 100  # detections per image (COCOeval's maximum)

  # Optimization (finola_jax.train.step.create_optimizer's keys).
  config.steps = 90_000
  config.batch_size = 64
  config.learning_rate = 1e-3
  config.matrix_learning_rate_scale = 1.0  # no FINOLA matrices here
  config.warmup_steps = 1000
  config.weight_decay = 1e-4
  config.grad_clip_norm = 1.0
  config.seed = 0

  # Bookkeeping (may change when a run is resumed).
  config.log_every = 100
  config.eval_every = 10_000
  config.checkpoint_every = 2_000
  config.keep_checkpoints = 3
  config.num_images = 8
  return config
