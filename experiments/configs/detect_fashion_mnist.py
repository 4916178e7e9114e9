# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
r"""Detection on Fashion-MNIST canvases, on two CPU cores.

The benchmark of experiments/make_fashion_detection.py (64×64 canvases of
1–4 items, 10 classes); the head of configs/detect.py, narrower; the
encoder of a Fashion-MNIST pre-training (configs/
pretrain_masked_fashion_mnist.py, stride 4: a 16×16 map):

  python3 -m experiments.make_fashion_detection \
    --idx=../shared/data/fashion_mnist --out=/tmp/fashion_det
  python3 -m experiments.detect --workdir=/tmp/det_finola \
    --config=experiments/configs/detect_fashion_mnist.py \
    --config.dataset=coco:/tmp/fashion_det --pretrained_workdir=/tmp/fmnist_masked
"""

import ml_collections

from experiments.configs import detect

STEPS = 1200


def get_config() -> ml_collections.ConfigDict:
  """detect's config at the canvases' size and a CPU budget."""
  config = detect.get_config()
  config.image_size = 64
  config.max_boxes = 4  # make_fashion_detection.MAX_ITEMS
  config.head_width = 64
  config.top_k = 20
  config.steps = STEPS
  config.batch_size = 32
  config.learning_rate = 2e-3
  config.warmup_steps = 100
  config.log_every = 50
  config.eval_every = STEPS  # one evaluation, at the end
  config.checkpoint_every = 250
  return config
