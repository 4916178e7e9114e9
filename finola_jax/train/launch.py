# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Command-line plumbing shared by the training programs in ``experiments/``.

Each program defines the common flags with :func:`define_flags`, adds its
own, builds a :class:`~finola_jax.train.trainer.Task` and hands it to
:func:`run`. Flag names mean the same thing in every program.
"""

from __future__ import annotations

import json
import logging as std_logging
import os
from typing import Any, Callable, Dict

import jax
from absl import app
from absl import flags
from absl import logging
from etils import epath

from finola_jax.train import trainer

FLAGS = flags.FLAGS


def define_flags(*, image_size: int, stride: int, channels: int, steps: int,
                 batch_size: int, learning_rate: float, warmup_steps: int,
                 eval_every: int, checkpoint_every: int) -> None:
  """Defines the flags every training program has, with its own defaults."""
  flags.DEFINE_string("workdir", None, "Checkpoints, summaries and images go here; "
                      "a run resumes from the latest checkpoint in it.", required=True)
  flags.DEFINE_string("dataset", "embedded", "'embedded' (photographs bundled with "
                      "scikit-image, offline), 'folder:/path/to/images', or a tfds "
                      "name such as 'imagenet2012'.")
  flags.DEFINE_string("data_dir", None, "tfds data_dir (ImageNet: where its manual "
                      "download was prepared).")
  flags.DEFINE_integer("image_size", image_size, "Square training image size.")
  flags.DEFINE_integer("stride", stride, "Feature-map stride s: the map is "
                       "(image_size/s)², s=1 is the image's own resolution.")
  flags.DEFINE_integer("channels", channels, "Latent channels C (A, B are C×C).")
  flags.DEFINE_integer("encoder_width", 16, "Width of the encoder's first stage.")
  flags.DEFINE_integer("encoder_depth", 3, "Residual stages of the encoder.")
  flags.DEFINE_integer("decoder_width", 32, "Channels of the upsampler's convolutions.")
  flags.DEFINE_enum("path", "vertical_first",
                    ["vertical_first", "horizontal_first", "average"],
                    "FINOLA path (see finola_jax.unroll).")
  flags.DEFINE_bool("colour_augmentation", True, "Train on images with "
                    "randomly ordered, randomly scaled colour channels.")
  flags.DEFINE_integer("batch_size", batch_size, "Global batch size; must divide "
                       "by the number of devices over all processes.")
  flags.DEFINE_integer("steps", steps, "Total training steps.")
  flags.DEFINE_float("learning_rate", learning_rate, "Peak AdamW learning rate.")
  flags.DEFINE_integer("warmup_steps", warmup_steps, "Linear warm-up steps.")
  flags.DEFINE_float("weight_decay", 1e-4, "AdamW weight decay.")
  flags.DEFINE_integer("log_every", 50, "Steps between training summaries.")
  flags.DEFINE_integer("eval_every", eval_every, "Steps between evaluations.")
  flags.DEFINE_integer("checkpoint_every", checkpoint_every, "Steps between checkpoints.")
  flags.DEFINE_integer("keep_checkpoints", 3, "Checkpoints kept.")
  flags.DEFINE_integer("seed", 0, "Seed of initialization, data and masking.")
  flags.DEFINE_enum("precision", "float32", ["float32", "bfloat16"],
                    "Compute dtype of convolutions and the unroll (parameters "
                    "and the unroll's state stay float32).")
  flags.DEFINE_string("eval_dir", None, "Evaluate on every image file in this "
                      "directory (centre crop, resized) and write WORKDIR/eval.json.")
  flags.DEFINE_bool("eval_only", False, "Only evaluate the latest checkpoint.")
  flags.DEFINE_string("coordinator_address", None, "host:port of process 0 for "
                      "multi-process runs (jax.distributed.initialize).")
  flags.DEFINE_integer("num_processes", None, "Number of processes (with "
                       "--coordinator_address).")
  flags.DEFINE_integer("process_id", None, "This process's index (with "
                       "--coordinator_address).")
  flags.DEFINE_bool("distributed_auto", False, "Call jax.distributed.initialize() "
                    "without arguments: auto-detection on TPU pods and SLURM.")


def initialize_distributed() -> None:
  """Joins the multi-process runtime if asked to; before any other JAX call."""
  explicit = [FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id]
  if any(v is not None for v in explicit):
    if any(v is None for v in explicit):
      raise app.UsageError("--coordinator_address, --num_processes and "
                           "--process_id go together.")
    if not 0 <= FLAGS.process_id < FLAGS.num_processes:
      raise app.UsageError(f"--process_id={FLAGS.process_id} must be in "
                           f"[0, --num_processes={FLAGS.num_processes}).")
    # Cross-process collectives on CPU devices need gloo; other backends
    # ignore this setting.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes,
                               FLAGS.process_id)
  elif FLAGS.distributed_auto:
    jax.distributed.initialize()


def validate_common_flags() -> None:
  """Raises ``app.UsageError`` naming the flag for every inconsistent value."""
  devices = jax.device_count()
  checks = [
      (FLAGS.steps >= 0, f"--steps must be >= 0, got {FLAGS.steps}."),
      (FLAGS.batch_size >= 1, f"--batch_size must be >= 1, got {FLAGS.batch_size}."),
      (FLAGS.batch_size % devices == 0,
       f"--batch_size={FLAGS.batch_size} must divide by the {devices} devices "
       f"({jax.process_count()} process(es) × {jax.local_device_count()} local)."),
      (FLAGS.stride >= 1 and not FLAGS.stride & (FLAGS.stride - 1),
       f"--stride must be a power of two, got {FLAGS.stride}."),
      (FLAGS.image_size >= 1, f"--image_size must be >= 1, got {FLAGS.image_size}."),
      (FLAGS.stride >= 1 and FLAGS.image_size % FLAGS.stride == 0,
       f"--image_size={FLAGS.image_size} must divide by --stride={FLAGS.stride}."),
      (FLAGS.channels >= 2, f"--channels must be >= 2, got {FLAGS.channels}."),
      (FLAGS.encoder_width >= 1, f"--encoder_width must be >= 1, got {FLAGS.encoder_width}."),
      (FLAGS.encoder_depth >= 0, f"--encoder_depth must be >= 0, got {FLAGS.encoder_depth}."),
      (FLAGS.learning_rate > 0, f"--learning_rate must be > 0, got {FLAGS.learning_rate}."),
      (FLAGS.warmup_steps >= 0, f"--warmup_steps must be >= 0, got {FLAGS.warmup_steps}."),
  ]
  checks += [(getattr(FLAGS, name) >= 1, f"--{name} must be >= 1, got {getattr(FLAGS, name)}.")
             for name in ("log_every", "eval_every", "checkpoint_every", "keep_checkpoints")]
  for ok, message in checks:
    if not ok:
      raise app.UsageError(message)
  if FLAGS.eval_dir is not None and not os.path.isdir(FLAGS.eval_dir):
    raise app.UsageError(f"--eval_dir={FLAGS.eval_dir} is not a directory.")


def train_config() -> trainer.TrainConfig:
  return trainer.TrainConfig(
      workdir=FLAGS.workdir, steps=FLAGS.steps, batch_size=FLAGS.batch_size,
      learning_rate=FLAGS.learning_rate, warmup_steps=FLAGS.warmup_steps,
      weight_decay=FLAGS.weight_decay, log_every=FLAGS.log_every,
      eval_every=FLAGS.eval_every, checkpoint_every=FLAGS.checkpoint_every,
      keep_checkpoints=FLAGS.keep_checkpoints, seed=FLAGS.seed)


def run(task: trainer.Task) -> Dict[str, float]:
  """Trains (or with ``--eval_only`` restores), then evaluates.

  Evaluates on the validation split, and on ``--eval_dir`` when given,
  writing ``WORKDIR/eval.json``. Returns the last evaluation's metrics.
  """
  from finola_jax.data import input_pipeline  # TensorFlow only for training.

  config = train_config()
  data_options = dict(image_size=FLAGS.image_size, data_dir=FLAGS.data_dir)

  def train_batches(start_step: int):
    return input_pipeline.create_train_iterator(
        FLAGS.dataset, global_batch_size=FLAGS.batch_size, seed=FLAGS.seed,
        start_step=start_step, colour_augmentation=FLAGS.colour_augmentation,
        **data_options)

  def eval_batches():
    return input_pipeline.create_eval_iterator(
        FLAGS.dataset, global_batch_size=FLAGS.batch_size, **data_options)

  if FLAGS.eval_only:
    metrics = evaluate_checkpoint(task, config, list(eval_batches()))
  else:
    metrics = trainer.train_and_evaluate(task, config, train_batches, eval_batches)
  print(f"Validation split of {FLAGS.dataset!r}: {_format(metrics)}", flush=True)
  print(f"PNG grids of the evaluation batches: {epath.Path(config.workdir) / 'images'}",
        flush=True)
  if FLAGS.eval_dir is not None:
    images = input_pipeline.load_image_directory(FLAGS.eval_dir, FLAGS.image_size)
    batches = list(trainer.pad_to_device_batches(images, FLAGS.batch_size))
    metrics = evaluate_checkpoint(task, config, batches, tag="eval_dir")
    result = dict(metrics, num_images=len(images),
                  eval_dir=os.path.abspath(FLAGS.eval_dir))
    path = epath.Path(config.workdir) / "eval.json"
    if jax.process_index() == 0:
      path.write_text(json.dumps(result, indent=2, sort_keys=True))
    print(f"{FLAGS.eval_dir}: {_format(metrics)} over {len(images)} images; "
          f"written to {path}", flush=True)
  return metrics


def evaluate_checkpoint(task: trainer.Task, config: trainer.TrainConfig,
                        batches, tag: str = "eval") -> Dict[str, float]:
  """Evaluates the latest checkpoint on device batches; draws the first."""
  step, params = trainer.restore_params(task, config, batches[0])
  steps = trainer.ParallelSteps(task, config.seed)
  replicated = steps.replicate(params)
  metrics = trainer.evaluate(steps, replicated, batches)
  path = trainer.write_image_grid(steps, replicated, batches[0], writer=None,
                                  workdir=config.workdir, step=step, tag=tag,
                                  count=config.num_images)
  if path:
    print(f"Checkpoint step {step}; pictures (input | output): {path}", flush=True)
  return dict(metrics, step=step)


def _format(metrics: Dict[str, Any]) -> str:
  return ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items()))


def quiet_library_logs() -> None:
  """Keeps orbax's per-save INFO lines out of the console (warnings stay)."""

  def keep(record) -> bool:
    return (record.levelno >= std_logging.WARNING
            or "orbax" not in record.pathname)

  # Orbax logs through both absl and standard loggers; both reach this handler.
  logging.get_absl_handler().python_handler.addFilter(keep)


def main_wrapper(build_task: Callable[[], trainer.Task]) -> Callable[[Any], None]:
  """An absl ``main`` that initializes, validates, builds and runs."""

  def main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    quiet_library_logs()
    initialize_distributed()
    validate_common_flags()
    try:
      run(build_task())
    except trainer.NonFiniteError as e:
      logging.error("%s", e)
      raise SystemExit(f"Stopped: {e}") from None

  return main
