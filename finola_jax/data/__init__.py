# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Input pipelines (tf.data in, numpy out). Needs the ``[train]`` extra."""

from finola_jax.data.input_pipeline import EMBEDDED
from finola_jax.data.input_pipeline import EMBEDDED_TRAIN_PHOTOS
from finola_jax.data.input_pipeline import EMBEDDED_VALIDATION_PHOTOS
from finola_jax.data.input_pipeline import create_eval_iterator
from finola_jax.data.input_pipeline import create_train_iterator
from finola_jax.data.input_pipeline import load_image_directory
from finola_jax.data.labeled import DIGITS
from finola_jax.data.labeled import LabeledSplit
from finola_jax.data.labeled import load_labeled_split

__all__ = (
    "DIGITS",
    "EMBEDDED",
    "EMBEDDED_TRAIN_PHOTOS",
    "EMBEDDED_VALIDATION_PHOTOS",
    "LabeledSplit",
    "create_eval_iterator",
    "create_train_iterator",
    "load_image_directory",
    "load_labeled_split",
)
