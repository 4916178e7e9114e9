# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
r"""Linear probe of a frozen masked-FINOLA encoder, offline.

scikit-learn's 8×8 handwritten digits, upscaled to the pre-training's image
size: a check that the features carry information, not a representation
benchmark. The default config of ``experiments.linear_probe``:

  python3 -m experiments.linear_probe --workdir=/tmp/finola_probe \
    --pretrained_workdir=/tmp/finola_masked
"""

import ml_collections
from ml_collections import config_dict


def get_config() -> ml_collections.ConfigDict:
  """Every setting of a probe; the encoder's come from its pre-training."""
  config = ml_collections.ConfigDict()
  config.task = "linear_probe"
  # "digits" (offline), "folder:/path" (one subfolder per class) or a
  # labeled tfds name (cifar10, imagenet2012).
  config.dataset = "digits"
  config.data_dir = config_dict.placeholder(str)
  # None: the pre-training's image size.
  config.image_size = config_dict.placeholder(int)
  config.max_examples = config_dict.placeholder(int)  # per split; None: all
  # The control: a randomly initialized encoder of the same architecture.
  config.random_init = False
  config.batch_size = 256  # feature extraction
  config.steps = 2000  # full-batch Adam steps of the classifier
  config.learning_rate = 1e-2
  config.weight_decay = 1e-4  # L2 penalty on the classifier's weights
  config.seed = 0  # the random encoder
  return config
