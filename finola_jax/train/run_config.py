# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""An experiment's config: checks, ``WORKDIR/config.json`` and resuming.

A run writes its whole config to ``WORKDIR/config.json``. Resuming,
``--eval_only`` and the probe read it back. A resumed run must have the same config except
for :data:`RUNTIME_KEYS` — when and how much it logs, evaluates, checkpoints
and draws, where the data lives, and which kernel runs the unroll — which
change neither the checkpoint nor the optimization.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Mapping, Optional

import jax
import ml_collections
from etils import epath

from finola_jax import core

# Keys a resumed run (or --eval_only) may change.
RUNTIME_KEYS = frozenset({
    "checkpoint_every", "data_dir", "decoder_chunk", "eval_every",
    "keep_checkpoints", "log_every", "num_images", "unroll_implementation",
})
PRECISIONS = ("float32", "bfloat16")
MATMUL_PRECISIONS = (None,) + core.PRECISION_NAMES
UNROLL_IMPLEMENTATIONS = core.IMPLEMENTATIONS
PATHS = core.PATHS
CONFIG_FILE = "config.json"


class ConfigError(ValueError):
  """A config value the programs refuse; the message names the key."""


def check(condition: bool, key: str, requirement: str, value: Any) -> None:
  """Raises ``ConfigError("config.KEY must REQUIREMENT, got VALUE.")``."""
  if not condition:
    raise ConfigError(f"config.{key} must {requirement}, got {value!r}.")


def check_value_in(key: str, value: Any, choices) -> None:
  """:func:`check` that ``value`` (``config.KEY``, or its default when the
  key is absent) is one of ``choices``."""
  check(value in choices, key, f"be one of {tuple(choices)}", value)


def check_choice(config: ml_collections.ConfigDict, key: str, choices) -> None:
  check_value_in(key, config[key], choices)


def is_power_of_two(value: int) -> bool:
  return value >= 1 and not value & (value - 1)


def validate_model(config: ml_collections.ConfigDict) -> None:
  """Checks the model and numerics keys every task reads.

  Raises:
    ConfigError: naming the first key whose value is inconsistent.
  """
  check(config.image_size >= 1, "image_size", "be >= 1", config.image_size)
  check(is_power_of_two(config.stride), "stride", "be a power of two",
        config.stride)
  check(config.image_size % config.stride == 0, "image_size",
        f"divide by config.stride={config.stride}", config.image_size)
  check(config.channels >= 2, "channels", "be >= 2", config.channels)
  check(config.encoder_width >= 1, "encoder_width", "be >= 1",
        config.encoder_width)
  check(config.encoder_depth >= 0, "encoder_depth", "be >= 0",
        config.encoder_depth)
  check(config.decoder_width >= 1, "decoder_width", "be >= 1",
        config.decoder_width)
  check(config.matrix_init_scale > 0, "matrix_init_scale", "be > 0",
        config.matrix_init_scale)
  check(config.get("matrix_init_damping", 0.0) >= 0, "matrix_init_damping",
        "be >= 0", config.get("matrix_init_damping"))
  check(config.decoder_chunk >= 0, "decoder_chunk", "be >= 0 (0: no chunks)",
        config.decoder_chunk)
  check_choice(config, "path", PATHS)
  check_choice(config, "precision", PRECISIONS)
  check_choice(config, "matmul_precision", MATMUL_PRECISIONS)
  check_choice(config, "unroll_implementation", UNROLL_IMPLEMENTATIONS)


def check_batch_split(config: ml_collections.ConfigDict) -> None:
  """Checks that ``config.batch_size`` splits evenly over all devices."""
  devices = jax.device_count()
  check(config.batch_size >= 1, "batch_size", "be >= 1", config.batch_size)
  check(config.batch_size % devices == 0, "batch_size",
        f"divide by the {devices} devices ({jax.process_count()} process(es) "
        f"× {jax.local_device_count()} local)", config.batch_size)


def validate_training(config: ml_collections.ConfigDict) -> None:
  """Checks the optimization and bookkeeping keys, and the batch's split.

  Raises:
    ConfigError: naming the first key whose value is inconsistent.
  """
  check(config.steps >= 0, "steps", "be >= 0", config.steps)
  check_batch_split(config)
  check(config.learning_rate > 0, "learning_rate", "be > 0",
        config.learning_rate)
  check(config.matrix_learning_rate_scale > 0, "matrix_learning_rate_scale",
        "be > 0", config.matrix_learning_rate_scale)
  check(config.warmup_steps >= 0, "warmup_steps", "be >= 0",
        config.warmup_steps)
  check(config.weight_decay >= 0, "weight_decay", "be >= 0",
        config.weight_decay)
  check(config.grad_clip_norm > 0, "grad_clip_norm", "be > 0",
        config.grad_clip_norm)
  for key in ("log_every", "eval_every", "checkpoint_every",
              "keep_checkpoints", "num_images"):
    check(config[key] >= 1, key, "be >= 1", config[key])


def to_dict(config: ml_collections.ConfigDict) -> Dict[str, Any]:
  """The config as JSON values (what ``config.json`` holds)."""
  return json.loads(config.to_json())


def from_dict(values: Mapping[str, Any]) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(values))


def read(workdir: str) -> ml_collections.ConfigDict:
  """``WORKDIR/config.json`` as a ConfigDict.

  Raises:
    FileNotFoundError: the workdir holds no run.
  """
  path = epath.Path(workdir) / CONFIG_FILE
  if not path.exists():
    raise FileNotFoundError(
        f"No {CONFIG_FILE} in {workdir}: no run was started there.")
  return from_dict(json.loads(path.read_text()))


def write(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Writes ``WORKDIR/config.json`` (process 0 only)."""
  if jax.process_index() != 0:
    return
  path = epath.Path(workdir) / CONFIG_FILE
  path.parent.mkdir(parents=True, exist_ok=True)
  # Written whole, then renamed: the other processes, checking at the same
  # time, see either no file or the complete one.
  temporary = path.with_suffix(".tmp")
  temporary.write_text(json.dumps(to_dict(config), indent=2, sort_keys=True))
  temporary.rename(path)


def _flatten(values: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
  flat = {}
  for key, value in values.items():
    if isinstance(value, Mapping):
      flat.update(_flatten(value, f"{prefix}{key}."))
    else:
      flat[prefix + key] = value
  return flat


def check_same_run(workdir: str, saved: ml_collections.ConfigDict,
                   config: ml_collections.ConfigDict,
                   absent_defaults: Optional[Mapping[str, Any]] = None) -> None:
  """Raises ``ConfigError`` naming every key, but ``RUNTIME_KEYS``, that differs.

  A key of ``absent_defaults`` missing from either config counts as having
  its value there (a key added after ``saved`` was written, at the value
  that gives the saved run's behaviour).
  """
  missing = "<absent>"
  old, new = _flatten(to_dict(saved)), _flatten(to_dict(config))
  for flat in (old, new):
    for key, default in (absent_defaults or {}).items():
      flat.setdefault(key, default)
  differences = [
      f"config.{key}: saved {old.get(key, missing)!r} vs now "
      f"{new.get(key, missing)!r}"
      for key in sorted(set(old) | set(new))
      if key not in RUNTIME_KEYS and old.get(key, missing) != new.get(key, missing)]
  if differences:
    raise ConfigError(
        f"--workdir={workdir} holds a run with another config "
        f"({'; '.join(differences)}). Use a new --workdir, or that run's config "
        f"to resume or evaluate it (only {', '.join(sorted(RUNTIME_KEYS))} "
        "may change).")


def start_or_resume(workdir: str, config: ml_collections.ConfigDict,
                    absent_defaults: Optional[Mapping[str, Any]] = None) -> None:
  """Writes the config of a new run; checks a resumed run's against it
  (:func:`check_same_run`)."""
  if (epath.Path(workdir) / CONFIG_FILE).exists():
    check_same_run(workdir, read(workdir), config, absent_defaults)
  else:
    write(workdir, config)
