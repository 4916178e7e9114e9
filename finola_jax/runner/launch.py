# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Command-line plumbing shared by the training programs in ``experiments/``.

A training program is ``python3 -m experiments.NAME --workdir=DIR``, with
``--config=FILE`` an experiment config (``experiments/configs/``; default:
the program's own) whose fields ``--config.KEY=VALUE`` overrides. The other
flags are run-time options, not part of the experiment: ``--eval_only``,
``--eval_dir`` and the multi-process ones.

On SIGTERM (preemption) a training program saves a checkpoint at its current
step and exits with status 0; the same command resumes it.
"""

from __future__ import annotations

import contextlib
import logging as std_logging
import os
from typing import Any, Callable, Dict, Iterator, Optional

import jax
import ml_collections
from absl import app
from absl import flags
from absl import logging
from etils import epath
from ml_collections import config_flags

from finola_jax.data import input_pipeline
from finola_jax.data import sources
from finola_jax.runner import preemption
from finola_jax.runner import trainer
from finola_jax.train import run_config

FLAGS = flags.FLAGS
TrainAndEvaluate = Callable[[ml_collections.ConfigDict, str], Dict[str, float]]


def define_config_flag(default_config: str, flag_values: flags.FlagValues,
                       sys_argv=None) -> None:
  """``--config=FILE``, by default the config file ``default_config``.

  ``sys_argv``: the command line the overrides are read from, if not
  ``sys.argv`` (config_flags defines a flag per override it finds there).
  """
  config_flags.DEFINE_config_file(
      "config", default_config,
      "Experiment config: a Python file whose get_config() returns an "
      "ml_collections.ConfigDict (see experiments/configs/). Override its "
      "fields with --config.KEY=VALUE.", flag_values=flag_values,
      sys_argv=sys_argv)


def define_flags(default_config: str, flag_values: flags.FlagValues = FLAGS,
                 sys_argv=None) -> None:
  """The flags of a training program, with its default config file."""
  define_config_flag(default_config, flag_values, sys_argv)
  flags.DEFINE_string("workdir", None, "Checkpoints, summaries and images go "
                      "here; a run resumes from the latest checkpoint in it.",
                      required=True, flag_values=flag_values)
  flags.DEFINE_bool("eval_only", False, "Only evaluate the latest checkpoint, "
                    "with WORKDIR/config.json (a --config or --config.KEY "
                    "given as well must agree with it, as on resuming).",
                    flag_values=flag_values)
  flags.DEFINE_string("eval_dir", None, "Also evaluate on every image file in "
                      "this directory (centre crop, resized) and write "
                      "WORKDIR/eval.json.", flag_values=flag_values)
  flags.DEFINE_string("coordinator_address", None, "host:port of process 0 "
                      "for multi-process runs (jax.distributed.initialize).",
                      flag_values=flag_values)
  flags.DEFINE_integer("num_processes", None, "Number of processes (with "
                       "--coordinator_address).", flag_values=flag_values)
  flags.DEFINE_integer("process_id", None, "This process's index (with "
                       "--coordinator_address).", flag_values=flag_values)
  flags.DEFINE_bool("distributed_auto", False, "Call "
                    "jax.distributed.initialize() without arguments: "
                    "auto-detection on TPU pods and SLURM.",
                    flag_values=flag_values)


def initialize_distributed(flag_values: flags.FlagValues = FLAGS) -> None:
  """Joins the multi-process runtime if asked to; before any other JAX call."""
  address, count, index = (flag_values.coordinator_address,
                           flag_values.num_processes, flag_values.process_id)
  if any(v is not None for v in (address, count, index)):
    if any(v is None for v in (address, count, index)):
      raise app.UsageError("--coordinator_address, --num_processes and "
                           "--process_id go together.")
    if not 0 <= index < count:
      raise app.UsageError(f"--process_id={index} must be in "
                           f"[0, --num_processes={count}).")
    # Cross-process collectives on CPU devices need gloo; other backends
    # ignore this setting.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(address, count, index)
  elif flag_values.distributed_auto:
    jax.distributed.initialize()


def given_config(workdir: str, flag_values: flags.FlagValues = FLAGS
                 ) -> Optional[ml_collections.ConfigDict]:
  """The config ``--eval_only`` compares with the workdir's, if any.

  ``--config=FILE`` (with its overrides) as it is; overrides alone applied
  to ``WORKDIR/config.json``; ``None`` when neither was given.
  """
  flag = flag_values["config"]
  if flag.present:
    return flag.value
  overrides = config_flags.get_override_values(flag)
  if not overrides:
    return None
  config = run_config.read(workdir)
  for key, value in overrides.items():
    *parents, name = key.split(".")
    parent = config
    for part in parents:
      parent = parent[part]
    parent[name] = value
  return config


def format_metrics(metrics: Dict[str, Any]) -> str:
  return ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())
                   if isinstance(v, (int, float)))


def _keep_console_record(record) -> bool:
  return record.levelno >= std_logging.WARNING or "orbax" not in record.pathname


def quiet_library_logs() -> None:
  """Keeps orbax's per-save INFO lines out of the console (warnings stay)."""
  # Orbax logs through both absl and standard loggers; both reach this handler.
  handler = logging.get_absl_handler().python_handler
  if _keep_console_record not in handler.filters:
    handler.addFilter(_keep_console_record)


@contextlib.contextmanager
def preemption_ends_cleanly() -> Iterator[None]:
  """Turns :class:`preemption.Preempted` into a message: the program exits 0.

  The checkpoint is saved; running the same command again resumes.
  """
  try:
    yield
  except preemption.Preempted as e:
    logging.warning("%s", e)
    print(e, flush=True)


@contextlib.contextmanager
def program_errors() -> Iterator[None]:
  """Config and dataset errors become usage errors (raised before anything
  is written); a non-finite step stops the program with its message."""
  try:
    yield
  except (run_config.ConfigError, sources.DatasetError) as e:
    raise app.UsageError(str(e)) from None
  except trainer.NonFiniteError as e:
    logging.error("%s", e)
    raise SystemExit(f"Stopped: {e}") from None


def training_main(train_and_evaluate: TrainAndEvaluate, argv,
                  flag_values: flags.FlagValues = FLAGS) -> None:
  """A training program's ``main``: trains (or evaluates) and reports.

  Config and dataset errors become usage errors (before anything is
  written); a non-finite step stops the program with its message; a
  preemption notice (SIGTERM) saves the current step and ends the program
  with status 0.
  """
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  quiet_library_logs()
  input_pipeline.hide_accelerators_from_tensorflow()
  initialize_distributed(flag_values)
  workdir, eval_dir = flag_values.workdir, flag_values.eval_dir
  if eval_dir is not None and not os.path.isdir(eval_dir):
    raise app.UsageError(f"--eval_dir={eval_dir} is not a directory.")
  with preemption_ends_cleanly(), program_errors():
    if flag_values.eval_only:
      config = trainer.evaluation_config(workdir,
                                         given_config(workdir, flag_values))
      metrics = trainer.evaluate_checkpoint(
          config, workdir, trainer.validation_batches_fn(config))
    else:
      config = flag_values.config
      metrics = train_and_evaluate(config, workdir)
    print(f"Validation split of {config.dataset!r}: "
          f"{format_metrics(metrics)}", flush=True)
    print(f"PNG grids of the evaluation batches: "
          f"{epath.Path(workdir) / 'images'}", flush=True)
    if eval_dir is not None:
      result = trainer.evaluate_directory(config, workdir, eval_dir)
      count = result.pop("num_images")
      print(f"{eval_dir}: {format_metrics(result)} over {count} images; "
            f"written to {epath.Path(workdir) / 'eval.json'}", flush=True)
