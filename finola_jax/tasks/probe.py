# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Probing protocols: how well an encoder's features classify images.

The FINOLA and QB-Heat papers evaluate a pre-trained encoder three ways;
each is a `PROTOCOLS` entry here, run by `run_protocol`:

* ``"linear"``: the encoder is frozen; its feature map ``[B, h, w, C]`` is
  average-pooled to a ``grid × grid`` map (``grid=1``: the global mean),
  flattened, standardized with the training split's statistics and read by
  a linear softmax classifier.
* ``"tran1"``: the encoder is frozen; the ``grid²`` positions of the same
  pooled map are tokens (standardized per channel, plus a learned position
  embedding; ``grid = h``: every position of the map) that go through
  one pre-LayerNorm transformer block (multi-head self-attention, then an
  MLP, each residual), are mean-pooled and layer-normalized, and a linear
  classifier reads them.
* ``"finetune"``: the readout of ``"linear"`` (statistics of the initial
  encoder), with the encoder trained too, at ``encoder_lr_scale`` times the
  head's learning rate.

Budget rule, the same for every protocol and encoder: ``steps`` AdamW steps
(linear warm-up, cosine decay) on batches of ``batch_size`` training examples;
the batch at a step is a function of ``(seed, step)``. Frozen protocols run
the encoder once over each split and train on the stored readouts. Given a
workdir, the training is checkpointed and a killed probe resumes where its
last checkpoint left off, with the same result as an uninterrupted one.

An encoder is a pure function ``encode(params, images) → feature map``
(float32 ``[B, S, S, 3]`` → ``[B, h, w, C]``), or ``→ (feature map,
tokens [B, T, d])`` for an encoder with global tokens (Mobile-Former), and
its parameters; a random initialization of the same architecture is the
control. With tokens, the linear readout (and fine-tuning's) is what
Mobile-Former's classifier reads: ``hard_swish`` of the pooled map, then
the first token (``grid=1``: ``mobile_former.classifier_features``);
``"tran1"`` reads the map's positions only (its tokens have another width). Examples are stored
arrays ``[N, ...]`` (e.g. uint8 greyscale) that ``prepare`` turns into a
batch of float images, so a large split need not be held as float RGB.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from finola_jax.models import layers
from finola_jax.models import mobile_former
from finola_jax.train import checkpointing

PROTOCOLS = ("linear", "tran1", "finetune")

Params = Any
Encode = Callable[[Params, jax.Array], jax.Array]
Prepare = Callable[[np.ndarray], np.ndarray]

_STD_EPS = 1e-6


def identity_prepare(inputs: np.ndarray) -> np.ndarray:
  """The stored examples are already float32 images ``[b, S, S, 3]``."""
  return inputs


def pixels(params: Params, images: jax.Array) -> jax.Array:
  """The 'encoder' of the raw-pixel baseline: the image is its feature map.

  ``params`` is unused (pass ``{}``). With the linear protocol and ``grid``
  equal to the image size, the classifier reads every pixel of every
  channel.
  """
  del params
  return images


def masked_finola_encoder(model: nn.Module) -> Encode:
  """``encode`` for the encoder of a ``finola_jax.models.masked.MaskedFinola``:
  its map, or ``(map, tokens)`` for a Mobile-Former.

  Its parameters are ``params["encoder"]`` of a pre-training checkpoint, or
  of ``model.init`` (the random-init control).
  """
  def encode(encoder_params, images):
    return model.apply({"params": {"encoder": encoder_params}}, images,
                       method=lambda module, x: module.encoder(x))
  return encode


def pool_grid(feature_map: jax.Array, grid: int) -> jax.Array:
  """Average pooling ``[B, h, w, C] → [B, grid, grid, C]``; grid divides h, w."""
  batch, height, width, channels = feature_map.shape
  if grid < 1 or height % grid or width % grid:
    raise ValueError(f"grid={grid} must divide the feature map's {height}×"
                     f"{width} positions.")
  return feature_map.reshape(batch, grid, height // grid, grid, width // grid,
                             channels).mean(axis=(2, 4))


def linear_readout(encoded, grid: int) -> jax.Array:
  """What the linear classifier reads.

  A map ``[B, h, w, C] → [B, grid²·C]``; ``(map, tokens [B, T, d]) →
  [B, grid²·C + d]``: ``hard_swish`` of the pooled map, then the first token
  (Mobile-Former's classifier features at ``grid=1``).
  """
  feature_map, tokens = layers.split_encoder_output(encoded)
  pooled = pool_grid(feature_map.astype(jnp.float32), grid)
  flat = pooled.reshape(pooled.shape[0], -1)
  if tokens is None:
    return flat
  return jnp.concatenate([mobile_former.hard_swish(flat),
                          tokens[:, 0].astype(jnp.float32)], axis=-1)


def token_readout(encoded, grid: int) -> jax.Array:
  """``[B, h, w, C] → [B, grid², C]``: the tokens of the transformer block
  (the positions of the map; an encoder's own tokens are left out)."""
  feature_map, _ = layers.split_encoder_output(encoded)
  pooled = pool_grid(feature_map.astype(jnp.float32), grid)
  return pooled.reshape(pooled.shape[0], grid * grid, pooled.shape[-1])


class Standardize(nn.Module):
  """``(x − mean) / std`` with fixed statistics, then the wrapped head.

  The statistics are constants of the probe (not trained): the mean and
  standard deviation of the training split's readouts under the initial
  encoder, over the examples (and, for tokens, the positions).
  """
  head: nn.Module
  mean: Any
  std: Any

  def __call__(self, readout):
    return self.head((readout - self.mean) / self.std)


class LinearHead(nn.Module):
  """A linear softmax classifier: ``[B, D] → logits [B, num_classes]``."""
  num_classes: int

  @nn.compact
  def __call__(self, features):
    return nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros)(features)


class TransformerBlockHead(nn.Module):
  """One pre-LN transformer block on tokens, mean pooling, a linear classifier.

  ``[B, T, C] → logits [B, num_classes]``. A learned position embedding
  ``[T, C]`` is added first: attention alone does not know where a token was.
  """
  num_classes: int
  num_heads: int = 4
  mlp_ratio: int = 4

  @nn.compact
  def __call__(self, tokens):
    num_tokens, channels = tokens.shape[1:]
    if channels % self.num_heads:
      raise ValueError(f"num_heads={self.num_heads} must divide the "
                       f"{channels} feature channels.")
    position = self.param("position", nn.initializers.normal(0.02),
                          (num_tokens, channels))
    x = tokens + position
    x = x + nn.MultiHeadDotProductAttention(self.num_heads)(nn.LayerNorm()(x))
    y = nn.gelu(nn.Dense(self.mlp_ratio * channels)(nn.LayerNorm()(x)))
    x = x + nn.Dense(channels)(y)
    pooled = nn.LayerNorm()(jnp.mean(x, axis=1))
    return nn.Dense(self.num_classes)(pooled)


@dataclasses.dataclass(frozen=True)
class ProbeConfig:
  """How a probe is trained.

  Attributes:
    protocol: one of `PROTOCOLS`.
    steps: optimizer steps (every protocol, every encoder).
    batch_size: training examples per step; also the batch of feature
      extraction and evaluation.
    learning_rate: peak AdamW learning rate of the head.
    warmup_steps: linear warm-up steps (capped below ``steps``).
    weight_decay: AdamW weight decay (head and, when fine-tuned, encoder).
    encoder_lr_scale: ``"finetune"``: the encoder's learning rate is this
      times the head's.
    grid: the feature map is average-pooled to ``grid × grid`` positions:
      the linear readout flattens them, ``"tran1"`` takes them as tokens.
    num_heads: attention heads of ``"tran1"``.
    mlp_ratio: hidden width of ``"tran1"``'s MLP, in channels.
    seed: seed of the head's initialization and the batches.
    monitor_examples: at most this many evenly spaced training examples give
      the readout statistics and ``train_top1`` (it bounds the passes over
      the training split that fine-tuning adds to its steps).
  """
  protocol: str = "linear"
  steps: int = 2000
  batch_size: int = 256
  learning_rate: float = 1e-3
  warmup_steps: int = 100
  weight_decay: float = 1e-4
  encoder_lr_scale: float = 0.1
  grid: int = 1
  num_heads: int = 4
  mlp_ratio: int = 4
  seed: int = 0
  monitor_examples: int = 10_000

  def __post_init__(self):
    if self.protocol not in PROTOCOLS:
      raise ValueError(f"protocol must be one of {PROTOCOLS}, got "
                       f"{self.protocol!r}.")
    for name in ("steps", "batch_size", "grid", "num_heads", "mlp_ratio",
                 "monitor_examples"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
    for name in ("learning_rate", "encoder_lr_scale"):
      if getattr(self, name) <= 0:
        raise ValueError(f"{name} must be > 0, got {getattr(self, name)}.")
    if self.warmup_steps < 0 or self.weight_decay < 0:
      raise ValueError("warmup_steps and weight_decay must be >= 0, got "
                       f"{self.warmup_steps} and {self.weight_decay}.")


@dataclasses.dataclass(frozen=True)
class ProbeResult:
  """What `run_protocol` measured and trained.

  Attributes:
    protocol: the protocol run.
    top1: accuracy on the evaluation examples.
    train_top1: accuracy on (at most ``monitor_examples`` of) the training
      examples.
    num_train: training examples.
    num_eval: evaluation examples.
    encoder_params: the encoder's parameters after probing: the very object
      passed in under the frozen protocols, the trained ones under
      ``"finetune"``.
    head_params: the trained head's parameters.
  """
  protocol: str
  top1: float
  train_top1: float
  num_train: int
  num_eval: int
  encoder_params: Params
  head_params: Params

  def record(self) -> dict[str, Any]:
    """The JSON-able measurements (for ``probe.json``)."""
    return {"protocol": self.protocol, "top1": self.top1,
            "train_top1": self.train_top1, "num_train": self.num_train,
            "num_eval": self.num_eval}


def _batches(count: int, batch_size: int):
  """Consecutive index slices covering ``range(count)`` once."""
  return (slice(start, min(start + batch_size, count))
          for start in range(0, count, batch_size))


def _step_indices(seed: int, step: int, count: int, batch_size: int) -> np.ndarray:
  """The training examples of a step: ``batch_size`` draws, a function of (seed, step)."""
  return np.random.default_rng((seed, step)).integers(0, count, batch_size)


def _readout_fn(config: ProbeConfig) -> Callable[[jax.Array], jax.Array]:
  readout = token_readout if config.protocol == "tran1" else linear_readout
  return functools.partial(readout, grid=config.grid)


def _readouts(encode: Encode, encoder_params: Params, inputs: np.ndarray,
              prepare: Prepare, config: ProbeConfig) -> np.ndarray:
  """The readout of every stored example under the given encoder (one pass)."""
  readout_fn = _readout_fn(config)
  apply = jax.jit(lambda p, x: readout_fn(encode(p, x)))
  return np.concatenate([
      np.asarray(apply(encoder_params, prepare(inputs[rows])))
      for rows in _batches(len(inputs), config.batch_size)])


def _statistics(readouts: np.ndarray, config: ProbeConfig):
  """Per-feature (linear) or per-channel (tokens) mean and std."""
  axes = (0, 1) if config.protocol == "tran1" else (0,)
  mean = readouts.mean(axis=axes, dtype=np.float64)
  std = readouts.std(axis=axes, dtype=np.float64) + _STD_EPS
  return mean.astype(np.float32), std.astype(np.float32)


def _optimizer(config: ProbeConfig, encoder_params: Params | None):
  """AdamW (warm-up + cosine); under fine-tuning, a slower encoder."""
  def adamw(scale):
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, scale * config.learning_rate,
        warmup_steps=min(config.warmup_steps, config.steps - 1),
        decay_steps=config.steps, end_value=0.0)
    return optax.adamw(schedule, weight_decay=config.weight_decay)
  if encoder_params is None:
    return adamw(1.0)
  return optax.multi_transform(
      {"head": adamw(1.0), "encoder": adamw(config.encoder_lr_scale)},
      {"head": "head", "encoder": "encoder"})


def _head(config: ProbeConfig, num_classes: int, mean, std) -> nn.Module:
  if config.protocol == "tran1":
    head = TransformerBlockHead(num_classes, config.num_heads, config.mlp_ratio)
  else:
    head = LinearHead(num_classes)
  return Standardize(head, mean, std)


def _cross_entropy(logits, labels):
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def _accuracy(predict: Callable[[np.ndarray], np.ndarray], inputs: np.ndarray,
              labels: np.ndarray, batch_size: int) -> float:
  correct = sum(int(np.sum(np.asarray(predict(inputs[rows])) == labels[rows]))
                for rows in _batches(len(inputs), batch_size))
  return correct / len(labels)


def _check_examples(name: str, inputs: np.ndarray, labels: np.ndarray,
                    num_classes: int) -> np.ndarray:
  labels = np.asarray(labels)
  if labels.ndim != 1 or len(labels) != len(inputs) or not len(labels):
    raise ValueError(f"{name}: {len(inputs)} examples but labels of shape "
                     f"{labels.shape}; expected [{len(inputs)}] with N >= 1.")
  if labels.min() < 0 or labels.max() >= num_classes:
    raise ValueError(f"{name}: labels must be in [0, {num_classes}), got "
                     f"[{labels.min()}, {labels.max()}].")
  return labels.astype(np.int32)


def run_protocol(encode: Encode, encoder_params: Params, *,
                 train_inputs: np.ndarray, train_labels: np.ndarray,
                 eval_inputs: np.ndarray, eval_labels: np.ndarray,
                 num_classes: int, config: ProbeConfig,
                 prepare: Prepare = identity_prepare,
                 workdir: str | None = None,
                 checkpoint_every: int = 500) -> ProbeResult:
  """Trains a probe of ``config.protocol`` on the training examples; scores it.

  Args:
    encode: ``(params, float32 [B, S, S, 3]) → [B, h, w, C]`` or
      ``([B, h, w, C], tokens [B, T, d])``.
    encoder_params: its parameters (pre-trained, or a random initialization).
    train_inputs: stored training examples ``[N, ...]`` (see ``prepare``).
    train_labels: int ``[N]`` in ``[0, num_classes)``.
    eval_inputs: stored evaluation examples ``[M, ...]``.
    eval_labels: int ``[M]``.
    num_classes: classes of the classifier.
    config: protocol, budget and head settings.
    prepare: stored examples ``[b, ...]`` → float32 images ``[b, S, S, 3]``.
    workdir: the training's parameters and optimizer state are saved to
      ``WORKDIR/checkpoints`` every ``checkpoint_every`` steps, and training
      resumes from the newest readable one there. None: no checkpoints.
    checkpoint_every: steps between checkpoints.

  Returns:
    A `ProbeResult`: top-1 on both splits and the trained parameters.
  """
  train_labels = _check_examples("train", train_inputs, train_labels, num_classes)
  eval_labels = _check_examples("eval", eval_inputs, eval_labels, num_classes)
  readout_fn = _readout_fn(config)
  finetune = config.protocol == "finetune"
  count = min(len(train_labels), config.monitor_examples)
  monitor = np.arange(count) * len(train_labels) // count
  if finetune:
    # Readouts of the initial encoder, only for the head's fixed statistics.
    monitor_readouts = _readouts(encode, encoder_params, train_inputs[monitor],
                                 prepare, config)
  else:
    train_readouts = _readouts(encode, encoder_params, train_inputs, prepare,
                               config)
    monitor_readouts = train_readouts[monitor]
  head = _head(config, num_classes, *_statistics(monitor_readouts, config))
  head_params = head.init(jax.random.PRNGKey(config.seed),
                          monitor_readouts[:1])["params"]

  if finetune:
    params = {"head": head_params, "encoder": encoder_params}

    def logits_fn(params, inputs):
      readout = readout_fn(encode(params["encoder"], inputs))
      return head.apply({"params": params["head"]}, readout)

    def batch_inputs(rows):
      return prepare(train_inputs[rows])
    tx = _optimizer(config, encoder_params)
  else:
    params = {"head": head_params}

    def logits_fn(params, readouts):
      return head.apply({"params": params["head"]}, readouts)

    def batch_inputs(rows):
      return train_readouts[rows]
    tx = _optimizer(config, None)

  @jax.jit
  def train_step(params, opt_state, inputs, labels):
    loss, grads = jax.value_and_grad(
        lambda p: _cross_entropy(logits_fn(p, inputs), labels))(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  opt_state = tx.init(params)
  start, manager = 0, None
  if workdir is not None:
    if checkpoint_every < 1:
      raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}.")
    manager = checkpointing.create_manager(workdir, keep=1)
    start, restored = checkpointing.resume(
        workdir, manager, {"params": params, "opt_state": opt_state})
    if start is None:
      start = 0
    else:
      params, opt_state = restored["params"], restored["opt_state"]
      logging.info("The %s probe resumes at step %d of %d.", config.protocol,
                   start, config.steps)
  try:
    for step in range(start, config.steps):
      rows = _step_indices(config.seed, step, len(train_labels),
                           config.batch_size)
      params, opt_state, loss = train_step(params, opt_state,
                                           batch_inputs(rows),
                                           train_labels[rows])
      done = step + 1
      if (manager is not None and done % checkpoint_every == 0
          and done < config.steps):
        checkpointing.save(manager, done, {"params": params,
                                           "opt_state": opt_state})
        logging.info("The %s probe: step %d of %d, loss %.4f; checkpointed.",
                     config.protocol, done, config.steps, float(loss))
  finally:
    if manager is not None:
      manager.close()

  predict = jax.jit(lambda p, x: jnp.argmax(logits_fn(p, x), axis=-1))
  if finetune:
    predict_stored = lambda x: predict(params, prepare(x))
    train_top1 = _accuracy(predict_stored, train_inputs[monitor],
                           train_labels[monitor], config.batch_size)
    top1 = _accuracy(predict_stored, eval_inputs, eval_labels, config.batch_size)
    final_encoder = params["encoder"]
  else:
    eval_readouts = _readouts(encode, encoder_params, eval_inputs, prepare,
                              config)
    predict_readouts = functools.partial(predict, params)
    train_top1 = _accuracy(predict_readouts, monitor_readouts,
                           train_labels[monitor], config.batch_size)
    top1 = _accuracy(predict_readouts, eval_readouts, eval_labels,
                     config.batch_size)
    final_encoder = encoder_params
  return ProbeResult(protocol=config.protocol, top1=top1, train_top1=train_top1,
                     num_train=len(train_labels), num_eval=len(eval_labels),
                     encoder_params=final_encoder, head_params=params["head"])
