# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
r"""Probing a masked-FINOLA encoder: linear, tran-1 or fine-tuning.

Builds the pre-training's model from --pretrained_workdir's config.json and
loads the encoder of its newest readable checkpoint (or, with
config.random_init, a randomly initialized encoder of the same
architecture: the control; with config.raw_pixels, the image itself: the
baseline), trains the probe of config.protocol
(`finola_jax.tasks.probe`: ``linear``, ``tran1`` or ``finetune``) and
reports top-1 on the scored split to the console and WORKDIR/probe.json
(the probe's config, with the encoder it read: WORKDIR/config.json). The
training is checkpointed every config.checkpoint_every steps: run the same
command again to resume a killed probe (the same config and encoder, or
an error naming what differs). The recipe is configs/linear_probe.py:

  python3 -m experiments.linear_probe --workdir=/tmp/finola_probe \
    --pretrained_workdir=/tmp/finola_masked
  python3 -m experiments.linear_probe --workdir=/tmp/finola_probe_random \
    --pretrained_workdir=/tmp/finola_masked --config.random_init=True

A Mobile-Former encoder (the pre-training's config.encoder) is read as its
classifier reads it: the pooled map then the first global token (linear,
finetune); tran1 takes the positions of its map as tokens.

The offline default dataset is scikit-learn's 8×8 handwritten digits,
upscaled: a check that features carry information, too easy to rank
encoders. configs/probe_fashion_mnist.py probes on Fashion-MNIST.
"""

import json
import os
import time
from typing import Any, Dict

import jax
import ml_collections
from absl import app
from absl import flags
from absl import logging
from etils import epath

from finola_jax import tasks
from finola_jax.data import input_pipeline
from finola_jax.data import labeled
from finola_jax.runner import launch
from finola_jax.tasks import probe
from finola_jax.train import checkpointing
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
                      "architecture (and the default image size), its "
                      "newest readable checkpoint the encoder. Needed unless "
                      "config.raw_pixels.", flag_values=flag_values)


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Raises ``ConfigError`` naming the key of an inconsistent value."""
  run_config.check_choice(config, "task", ["linear_probe"])
  run_config.check_choice(config, "protocol", probe.PROTOCOLS)
  for key in ("steps", "batch_size", "grid", "num_heads", "mlp_ratio",
              "monitor_examples", "checkpoint_every"):
    run_config.check(config[key] >= 1, key, "be >= 1", config[key])
  for key in ("image_size", "max_examples"):  # None: the default.
    run_config.check(config[key] is None or config[key] >= 1, key,
                     "be None or >= 1", config[key])
  for key in ("learning_rate", "encoder_lr_scale"):
    run_config.check(config[key] > 0, key, "be > 0", config[key])
  for key in ("warmup_steps", "weight_decay"):
    run_config.check(config[key] >= 0, key, "be >= 0", config[key])
  if config.raw_pixels:
    run_config.check(not config.random_init, "random_init",
                     "be False when config.raw_pixels (no encoder)",
                     config.random_init)
    # Pixels have 3 channels and nothing to fine-tune: only a linear readout.
    run_config.check(config.protocol == "linear", "protocol",
                     "be 'linear' when config.raw_pixels", config.protocol)


def probe_config(config: ml_collections.ConfigDict) -> probe.ProbeConfig:
  """The probe's training settings from the program's config."""
  return probe.ProbeConfig(
      protocol=config.protocol, steps=config.steps,
      batch_size=config.batch_size, learning_rate=config.learning_rate,
      warmup_steps=config.warmup_steps, weight_decay=config.weight_decay,
      encoder_lr_scale=config.encoder_lr_scale, grid=config.grid,
      num_heads=config.num_heads, mlp_ratio=config.mlp_ratio,
      seed=config.seed, monitor_examples=config.monitor_examples)


def read_pretraining(pretrained_workdir: str) -> ml_collections.ConfigDict:
  """The masked pre-training's config; ``ConfigError`` if it is not one."""
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
  return pretraining


def load_encoder(config: ml_collections.ConfigDict,
                 pretraining: ml_collections.ConfigDict | None,
                 pretrained_workdir: str | None):
  """``(encode, params, source)``: what the probe reads (see the module doc).

  ``pretraining`` (its config) and ``pretrained_workdir`` may be None only
  when ``config.raw_pixels``.
  """
  if config.raw_pixels:
    return probe.pixels, {}, "raw_pixels"
  task = tasks.create_task(pretraining)
  encode = probe.masked_finola_encoder(task.model)
  if config.random_init:
    params = jax.jit(task.init_params)(jax.random.PRNGKey(config.seed))
    return encode, params["encoder"], "random_init"
  step, params = checkpointing.restore_latest_params(pretrained_workdir)
  return encode, params["encoder"], f"step {step}"


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       pretrained_workdir: str | None = None) -> Dict[str, Any]:
  """Probes the encoder of ``pretrained_workdir``; writes and returns probe.json.

  Raises:
    ConfigError: an inconsistent config or pre-training workdir, or a
      dataset that cannot be read (a missing or malformed IDX file, say);
      nothing was written.
  """
  start = time.time()
  validate_config(config)
  if pretrained_workdir is None and not config.raw_pixels:
    raise run_config.ConfigError(
        "--pretrained_workdir is needed (the encoder's architecture) unless "
        "config.raw_pixels.")
  pretraining = (None if pretrained_workdir is None
                 else read_pretraining(pretrained_workdir))
  if config.image_size is None and pretraining is None:
    raise run_config.ConfigError(
        "config.image_size must be set when there is no --pretrained_workdir.")
  image_size = config.image_size or pretraining.image_size
  map_size = image_size if config.raw_pixels else image_size // pretraining.stride
  run_config.check(map_size % config.grid == 0, "grid",
                   f"divide the {map_size}×{map_size} feature map", config.grid)
  try:
    data = labeled.load_labeled_arrays(
        config.dataset, image_size=image_size, data_dir=config.data_dir,
        max_examples=config.max_examples)
  except ValueError as e:  # Unknown datasets, missing or malformed files.
    raise run_config.ConfigError(f"config.dataset={config.dataset!r}: {e}") from e
  encode, params, source = load_encoder(config, pretraining, pretrained_workdir)
  pretrained_path = (None if pretrained_workdir is None else
                     str(checkpointing.absolute(pretrained_workdir)))
  # The encoder is part of what a resumed probe must share with its start.
  saved_config = ml_collections.ConfigDict(
      dict(config.to_dict(), pretrained_workdir=pretrained_path,
           encoder=source))
  run_config.start_or_resume(workdir, saved_config)
  outcome = probe.run_protocol(
      encode, params, train_inputs=data.train_inputs,
      train_labels=data.train_labels, eval_inputs=data.eval_inputs,
      eval_labels=data.eval_labels, num_classes=data.num_classes,
      config=probe_config(config), prepare=data.prepare, workdir=workdir,
      checkpoint_every=config.checkpoint_every)
  result = dict(
      outcome.record(), grid=config.grid, dataset=config.dataset,
      eval_split=data.eval_split, encoder=source, image_size=image_size,
      pretrained_workdir=pretrained_path, wall_s=round(time.time() - start, 1))
  path = epath.Path(workdir) / "probe.json"
  path.write_text(json.dumps(result, indent=2, sort_keys=True))
  logging.info("Wrote %s", path)
  print(f"{config.protocol} probe on {config.dataset} ({source}): top-1 "
        f"{result['top1']:.4f} on {data.eval_split} (train "
        f"{result['train_top1']:.4f}); written to {path}", flush=True)
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
