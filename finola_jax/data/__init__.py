# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Input pipelines (tf.data in, numpy out). Needs the ``[train]`` extra.

``sources`` holds one class per kind of dataset (`sources.from_name` picks
it), ``preprocessing`` resizes and augments images, ``input_pipeline``
batches them for ``pmap`` and ``labeled`` serves labeled splits for probing.
TensorFlow is imported on first use, so the photograph lists, `embedded_photo`
and the augmentation recipe's constants work without it.
"""

from finola_jax.data.input_pipeline import create_directory_eval_iterator
from finola_jax.data.input_pipeline import create_eval_iterator
from finola_jax.data.input_pipeline import create_train_iterator
from finola_jax.data.input_pipeline import hide_accelerators_from_tensorflow
from finola_jax.data.labeled import DIGITS
from finola_jax.data.labeled import LabeledSplit
from finola_jax.data.labeled import load_labeled_split
from finola_jax.data.sources import DatasetError
from finola_jax.data.sources import EMBEDDED
from finola_jax.data.sources import EMBEDDED_TRAIN_PHOTOS
from finola_jax.data.sources import EMBEDDED_VALIDATION_PHOTOS

__all__ = (
    "DIGITS",
    "DatasetError",
    "EMBEDDED",
    "EMBEDDED_TRAIN_PHOTOS",
    "EMBEDDED_VALIDATION_PHOTOS",
    "LabeledSplit",
    "create_directory_eval_iterator",
    "create_eval_iterator",
    "create_train_iterator",
    "hide_accelerators_from_tensorflow",
    "load_labeled_split",
)
