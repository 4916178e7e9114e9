# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
r"""Linear probing of a masked-FINOLA encoder.

Builds the pre-training's model from --pretrained_workdir's config.json and
loads the encoder of its newest readable checkpoint (or, with
config.random_init, a randomly initialized encoder of the same
architecture: the control), freezes it, extracts pooled features of whole
images, trains a linear classifier with optax and reports top-1 on the
validation split to the console and WORKDIR/probe.json (the probe's config:
WORKDIR/config.json). The recipe is configs/linear_probe.py:

  python3 -m experiments.linear_probe --workdir=/tmp/finola_probe \
    --pretrained_workdir=/tmp/finola_masked
  python3 -m experiments.linear_probe --workdir=/tmp/finola_probe_random \
    --pretrained_workdir=/tmp/finola_masked --config.random_init=True

The offline default dataset is scikit-learn's 8×8 handwritten digits,
upscaled: a check that features carry information, not ImageNet.
"""

import functools
import json
import os
from typing import Any, Dict

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import app
from absl import flags
from absl import logging
from etils import epath

from finola_jax import tasks
from finola_jax.data import input_pipeline
from finola_jax.data import labeled
from finola_jax.train import checkpointing
from finola_jax.train import launch
from finola_jax.train import run_config

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                              "configs", "linear_probe.py")
FLAGS = flags.FLAGS


def define_flags(flag_values: flags.FlagValues = FLAGS, sys_argv=None) -> None:
  launch.define_config_flag(DEFAULT_CONFIG, flag_values, sys_argv)
  flags.DEFINE_string("workdir", None, "Where config.json and probe.json are "
                      "written.", required=True, flag_values=flag_values)
  flags.DEFINE_string("pretrained_workdir", None, "Workdir of "
                      "pretrain_masked: its config.json gives the "
                      "architecture, its newest readable checkpoint the "
                      "encoder.", required=True, flag_values=flag_values)


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Raises ``ConfigError`` naming the key of an inconsistent value."""
  run_config.check_choice(config, "task", ["linear_probe"])
  for key in ("steps", "batch_size"):
    run_config.check(config[key] >= 1, key, "be >= 1", config[key])
  for key in ("image_size", "max_examples"):  # None: the default.
    run_config.check(config[key] is None or config[key] >= 1, key,
                     "be None or >= 1", config[key])
  run_config.check(config.learning_rate > 0, "learning_rate", "be > 0",
                   config.learning_rate)
  run_config.check(config.weight_decay >= 0, "weight_decay", "be >= 0",
                   config.weight_decay)


def load_encoder(config: ml_collections.ConfigDict, pretrained_workdir: str):
  """``(task, params, source)``: the pre-training's task and its encoder."""
  try:
    pretraining = run_config.read(pretrained_workdir)
  except FileNotFoundError as e:
    raise run_config.ConfigError(
        f"--pretrained_workdir={pretrained_workdir}: {e} Is it a "
        "pretrain_masked workdir?") from None
  if pretraining.get("task") != "masked":
    raise run_config.ConfigError(
        f"--pretrained_workdir={pretrained_workdir} holds a "
        f"{pretraining.get('task')!r} run, not a masked pre-training.")
  task = tasks.create_task(pretraining)
  if config.random_init:
    params = jax.jit(task.init_params)(jax.random.PRNGKey(config.seed))
    return task, {"encoder": params["encoder"]}, "random_init"
  step, params = checkpointing.restore_latest_params(pretrained_workdir)
  return task, {"encoder": params["encoder"]}, f"step {step}"


def extract_features(task, params, split: labeled.LabeledSplit,
                     batch_size: int):
  """Pooled features ``[N, C]`` and labels ``[N]`` of one pass."""
  features_fn = jax.jit(task.features)
  features, labels = [], []
  for batch in split.batches(batch_size):
    features.append(np.asarray(features_fn(params, batch["image"])))
    labels.append(batch["label"])
  return np.concatenate(features), np.concatenate(labels)


def fit_linear_classifier(config: ml_collections.ConfigDict, features,
                          labels, num_classes: int) -> Dict[str, jax.Array]:
  """Full-batch softmax regression on standardized features (pure JAX).

  Returns the classifier: weights ``w``, ``b`` and the features' ``mean``
  and ``std``.
  """
  mean, std = jnp.mean(features, 0), jnp.std(features, 0) + 1e-6
  x = (features - mean) / std
  tx = optax.adam(config.learning_rate)

  def loss_fn(p):
    logits = x @ p["w"] + p["b"]
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return ce + config.weight_decay * jnp.sum(jnp.square(p["w"]))

  def step(carry, _):
    p, opt_state = carry
    updates, opt_state = tx.update(jax.grad(loss_fn)(p), opt_state)
    return (optax.apply_updates(p, updates), opt_state), None

  params = {"w": jnp.zeros((x.shape[1], num_classes)), "b": jnp.zeros(num_classes)}
  (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), None,
                                length=config.steps)
  return dict(params, mean=mean, std=std)


def top1(classifier, features, labels) -> float:
  """The classifier's accuracy on ``features``."""
  classifier = jax.device_get(classifier)
  x = (features - classifier["mean"]) / classifier["std"]
  logits = x @ classifier["w"] + classifier["b"]
  return float(np.mean(np.argmax(logits, -1) == labels))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       pretrained_workdir: str) -> Dict[str, Any]:
  """Probes the encoder of ``pretrained_workdir``; writes and returns probe.json.

  Raises:
    ConfigError: an inconsistent config or pre-training workdir; nothing
      was written.
  """
  validate_config(config)
  task, params, source = load_encoder(config, pretrained_workdir)
  image_size = config.image_size or task.config.image_size
  splits = {name: labeled.load_labeled_split(
      config.dataset, name, image_size=image_size, data_dir=config.data_dir,
      max_examples=config.max_examples) for name in labeled.SPLITS}
  train_x, train_y = extract_features(task, params, splits["train"],
                                      config.batch_size)
  val_x, val_y = extract_features(task, params, splits["validation"],
                                  config.batch_size)
  fit = jax.jit(functools.partial(fit_linear_classifier, config,
                                  num_classes=splits["train"].num_classes))
  classifier = fit(train_x, train_y)
  result = {"top1": top1(classifier, val_x, val_y),
            "train_top1": top1(classifier, train_x, train_y),
            "num_train": len(train_y), "num_validation": len(val_y),
            "dataset": config.dataset, "encoder": source,
            "pretrained_workdir": str(checkpointing.absolute(pretrained_workdir))}
  run_config.write(workdir, config)
  path = epath.Path(workdir) / "probe.json"
  path.write_text(json.dumps(result, indent=2, sort_keys=True))
  logging.info("Wrote %s", path)
  print(f"Linear probe on {config.dataset} ({source}): top-1 "
        f"{result['top1']:.4f} (train {result['train_top1']:.4f}); written to "
        f"{path}", flush=True)
  return result


def main(argv, flag_values: flags.FlagValues = FLAGS) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  input_pipeline.hide_accelerators_from_tensorflow()
  try:
    train_and_evaluate(flag_values.config, flag_values.workdir,
                       pretrained_workdir=flag_values.pretrained_workdir)
  except run_config.ConfigError as e:
    raise app.UsageError(str(e)) from None


if __name__ == "__main__":
  define_flags()
  app.run(main)
