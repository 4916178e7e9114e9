# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
r"""Linear probing of a masked-FINOLA encoder.

Loads the encoder of the latest checkpoint in --pretrained_workdir (or, with
--random_init, a randomly initialized encoder of the same architecture: the
control), freezes it, extracts pooled features of whole images, trains a
linear classifier with optax and reports top-1 on the validation split to
the console and WORKDIR/probe.json.

  python -m experiments.linear_probe --workdir=/tmp/finola_probe \
    --pretrained_workdir=/tmp/finola_masked
  python -m experiments.linear_probe --workdir=/tmp/finola_probe_random \
    --pretrained_workdir=/tmp/finola_masked --random_init

The offline default dataset is scikit-learn's 8×8 handwritten digits,
upscaled: a check that features carry information, not ImageNet.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app
from absl import flags
from absl import logging

from finola_jax.data import labeled
from finola_jax.models import masked
from finola_jax.train import checkpointing

flags.DEFINE_string("workdir", None, "Where probe.json is written.", required=True)
flags.DEFINE_string("pretrained_workdir", None, "Workdir of pretrain_masked: its "
                    "config.json gives the architecture, its latest checkpoint "
                    "the encoder.")
flags.DEFINE_bool("random_init", False, "Use a randomly initialized encoder "
                  "(the control) instead of the pre-trained weights.")
flags.DEFINE_string("dataset", labeled.DIGITS, "'digits' (offline), "
                    "'folder:/path' (one subfolder per class) or a labeled tfds "
                    "name (cifar10, imagenet2012).")
flags.DEFINE_string("data_dir", None, "tfds data_dir.")
flags.DEFINE_integer("image_size", None, "Probe image size (default: the "
                     "pre-training image size).")
flags.DEFINE_integer("max_examples", None, "Use at most this many examples per split.")
flags.DEFINE_integer("batch_size", 256, "Feature-extraction batch size.")
flags.DEFINE_integer("probe_steps", 2000, "Full-batch optimizer steps of the classifier.")
flags.DEFINE_float("learning_rate", 1e-2, "Adam learning rate of the classifier.")
flags.DEFINE_float("weight_decay", 1e-4, "L2 penalty of the classifier's weights.")
flags.DEFINE_integer("seed", 0, "Seed of the random encoder and the classifier.")
FLAGS = flags.FLAGS


def load_encoder():
  """``(model, params, description)``: the masked-FINOLA model and weights."""
  config_path = os.path.join(FLAGS.pretrained_workdir, "config.json")
  if not os.path.exists(config_path):
    raise app.UsageError(f"--pretrained_workdir={FLAGS.pretrained_workdir} has "
                         "no config.json: is it a pretrain_masked workdir?")
  with open(config_path) as f:
    config = json.load(f)
  fields = {f.name for f in masked.MaskedFinola.__dataclass_fields__.values()}
  model = masked.MaskedFinola(**{k: v for k, v in config.items() if k in fields})
  image_size = FLAGS.image_size or model.image_size
  if FLAGS.random_init:
    dummy = jnp.zeros((1, image_size, image_size, 3))
    params = model.init(jax.random.PRNGKey(FLAGS.seed), dummy,
                        method=masked.MaskedFinola.features)["params"]
    return model, params, "random_init"
  step, params = checkpointing.restore_latest_params(FLAGS.pretrained_workdir)
  return model, {"encoder": params["encoder"]}, f"step {step}"


def extract_features(model, params, split: labeled.LabeledSplit):
  """Pooled features ``[N, C]`` and labels ``[N]`` of one pass."""
  features_fn = jax.jit(lambda p, x: model.apply(
      {"params": p}, x, method=masked.MaskedFinola.features))
  features, labels = [], []
  for batch in split.batches(FLAGS.batch_size):
    features.append(np.asarray(features_fn(params, batch["image"])))
    labels.append(batch["label"])
  return np.concatenate(features), np.concatenate(labels)


def train_linear_classifier(features, labels, num_classes: int):
  """Full-batch softmax regression on standardized features."""
  mean, std = features.mean(0), features.std(0) + 1e-6
  x = jnp.asarray((features - mean) / std)
  y = jnp.asarray(labels)
  params = {"w": jnp.zeros((x.shape[1], num_classes)), "b": jnp.zeros(num_classes)}
  tx = optax.adam(FLAGS.learning_rate)

  def loss_fn(p):
    logits = x @ p["w"] + p["b"]
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return ce + FLAGS.weight_decay * jnp.sum(jnp.square(p["w"]))

  @jax.jit
  def train(p):
    def step(carry, _):
      p, opt_state = carry
      grads = jax.grad(loss_fn)(p)
      updates, opt_state = tx.update(grads, opt_state)
      return (optax.apply_updates(p, updates), opt_state), None
    (p, _), _ = jax.lax.scan(step, (p, tx.init(p)), None, length=FLAGS.probe_steps)
    return p

  params = train(params)

  def top1(features, labels):
    logits = ((features - mean) / std) @ np.asarray(params["w"]) + np.asarray(params["b"])
    return float(np.mean(np.argmax(logits, -1) == labels))

  return top1


def validate_flags() -> None:
  """Raises ``app.UsageError`` naming the flag of an inconsistent value."""
  if FLAGS.pretrained_workdir is None:
    raise app.UsageError("--pretrained_workdir is required (with --random_init "
                         "it gives only the architecture).")
  for name in ("probe_steps", "batch_size"):
    if getattr(FLAGS, name) < 1:
      raise app.UsageError(f"--{name} must be >= 1, got {getattr(FLAGS, name)}.")
  for name in ("image_size", "max_examples"):  # None: the default.
    if getattr(FLAGS, name) is not None and getattr(FLAGS, name) < 1:
      raise app.UsageError(f"--{name} must be >= 1, got {getattr(FLAGS, name)}.")
  if FLAGS.learning_rate <= 0:
    raise app.UsageError(f"--learning_rate must be > 0, got {FLAGS.learning_rate}.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  validate_flags()
  model, params, source = load_encoder()
  image_size = FLAGS.image_size or model.image_size
  splits = {name: labeled.load_labeled_split(
      FLAGS.dataset, name, image_size=image_size, data_dir=FLAGS.data_dir,
      max_examples=FLAGS.max_examples) for name in labeled.SPLITS}
  train_x, train_y = extract_features(model, params, splits["train"])
  val_x, val_y = extract_features(model, params, splits["validation"])
  top1 = train_linear_classifier(train_x, train_y, splits["train"].num_classes)
  result = {"top1": top1(val_x, val_y), "train_top1": top1(train_x, train_y),
            "num_train": len(train_y), "num_validation": len(val_y),
            "dataset": FLAGS.dataset, "encoder": source,
            "pretrained_workdir": os.path.abspath(FLAGS.pretrained_workdir)}
  os.makedirs(FLAGS.workdir, exist_ok=True)
  path = os.path.join(FLAGS.workdir, "probe.json")
  with open(path, "w") as f:
    json.dump(result, f, indent=2, sort_keys=True)
  logging.info("Wrote %s", path)
  print(f"Linear probe on {FLAGS.dataset} ({source}): top-1 {result['top1']:.4f} "
        f"(train {result['train_top1']:.4f}); written to {path}", flush=True)


if __name__ == "__main__":
  app.run(main)
