# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Object detection on a (frozen) backbone: a CenterNet-style dense head.

The backbone is any pure function ``encode(params, images) → feature map``
(float32 ``[B, S, S, 3] → [B, n, n, C]`` at stride ``s = S / n``; see
``finola_jax.tasks.probe``): the encoder of a masked-FINOLA pre-training,
a random initialization of it, or any other encoder with that signature.
On its map a small head predicts, at every position,

* ``K`` class heatmap logits: the probability that an object of class k
  has its centre in that cell (targets: an elliptical Gaussian per box
  peaking at 1 on the box's centre cell, TTFNet's ``σ = α·size / 6``);
* a box: the centre's offset inside the cell and the log of its size in
  cells (`encode_boxes` / `decode_boxes`).

Why CenterNet rather than FCOS: the encoders give one map at stride 4,
CenterNet's own output stride, so no feature pyramid is needed; and its
decoding (local maxima by a 3×3 max-pool, then top-k) has a fixed shape,
with no non-maximum suppression, so it runs inside ``jit``/``pmap``.

Losses (per device batch): CenterNet's penalty-reduced focal loss on the
heatmaps, normalized by the number of centres; L1 on the offsets and log
sizes at each box's centre cell, normalized by the number of boxes.

``config.freeze_backbone`` (default): the features are computed under
``stop_gradient`` and the backbone's parameters get ``optax.set_to_zero``
(no update, no weight decay), so they stay bit-identical. Otherwise the
backbone trains with the head's optimizer at ``config.encoder_lr_scale``
times its learning rate.

Batches (``finola_jax.data.coco``): ``image`` ``[B, S, S, 3]``, ``boxes``
``[B, M, 4]`` ``(x0, y0, x1, y1)`` in input pixels, ``labels`` ``[B, M]``,
``box_mask`` ``[B, M]``.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import traverse_util

from finola_jax.models import layers
from finola_jax.train import run_config
from finola_jax.train import step

Params = Any
Encode = Callable[[Params, jax.Array], jax.Array]

# TTFNet's Gaussian width: σ = GAUSSIAN_ALPHA · size / 6 (in cells).
GAUSSIAN_ALPHA = 0.54
# A floor on σ (cells), so a box smaller than a cell still has a peak.
MIN_SIGMA = 0.25
# The heatmap's initial probability (CenterNet: biases at −2.19).
PRIOR_PROBABILITY = 0.1
# Predictions drawn by `visualize` need at least this score.
DRAW_SCORE = 0.3
# One colour per class (class k uses PALETTE[k % len(PALETTE)]).
PALETTE = ((1.0, 0.2, 0.2), (0.2, 1.0, 0.2), (0.3, 0.5, 1.0), (1.0, 1.0, 0.2),
            (1.0, 0.3, 1.0), (0.2, 1.0, 1.0), (1.0, 0.6, 0.1), (0.6, 0.3, 1.0),
            (0.6, 1.0, 0.6), (1.0, 0.7, 0.7))


class Backbone(NamedTuple):
  """What the detector needs of an encoder.

  Attributes:
    encode: ``(params, float32 [B, S, S, 3]) → [B, S/stride, S/stride, C]``,
      or ``→ (that map, tokens)`` (a Mobile-Former: the detector reads the
      map).
    params: its initial parameters (pre-trained or a random initialization).
    stride: input pixels per feature-map position.
  """
  encode: Encode
  params: Params
  stride: int


# ---------------------------------------------------------------- box coder ---


def encode_boxes(boxes: jax.Array, stride: int, map_size: int):
  """Boxes → (centre cell, offset in it, log size in cells).

  Args:
    boxes: ``[..., 4]`` ``(x0, y0, x1, y1)`` in input pixels, positive size.
    stride: pixels per cell.
    map_size: n, cells per side; centres outside the map go to its edge cell.

  Returns:
    ``cells`` int32 ``[..., 2]`` ``(column, row)``; ``offsets`` ``[..., 2]``
    ``= centre / stride − cell`` (in [0, 1) for centres inside the map);
    ``log_sizes`` ``[..., 2]`` ``= log((x1 − x0) / stride), log((y1 − y0) /
    stride)``.
  """
  centres = 0.5 * (boxes[..., :2] + boxes[..., 2:]) / stride
  cells = jnp.clip(jnp.floor(centres), 0, map_size - 1).astype(jnp.int32)
  sizes = (boxes[..., 2:] - boxes[..., :2]) / stride
  return cells, centres - cells, jnp.log(jnp.maximum(sizes, 1e-6))


def decode_boxes(cells: jax.Array, offsets: jax.Array, log_sizes: jax.Array,
                 stride: int) -> jax.Array:
  """The inverse of `encode_boxes`: ``[..., 4]`` ``(x0, y0, x1, y1)`` pixels."""
  centres = (cells + offsets) * stride
  half = 0.5 * jnp.exp(log_sizes) * stride
  return jnp.concatenate([centres - half, centres + half], axis=-1)


# ------------------------------------------------------------------ targets ---


def heatmap_targets(boxes, labels, box_mask, *, stride: int, map_size: int,
                    num_classes: int) -> jax.Array:
  """One image's heatmap ``[n, n, K]``: the max of its boxes' Gaussians.

  Box k adds ``exp(−Δx²/2σx² − Δy²/2σy²)`` around its centre cell (exactly
  1 there) in the channel of ``labels[k]``; padding boxes add nothing.
  """
  cells, _, log_sizes = encode_boxes(boxes, stride, map_size)
  sigmas = jnp.maximum(GAUSSIAN_ALPHA * jnp.exp(log_sizes) / 6.0, MIN_SIGMA)
  grid = jnp.arange(map_size, dtype=jnp.float32)

  def add_box(heat, box):
    cell, sigma, label, real = box
    gx = jnp.exp(-jnp.square(grid - cell[0]) / (2 * sigma[0] ** 2))
    gy = jnp.exp(-jnp.square(grid - cell[1]) / (2 * sigma[1] ** 2))
    channel = jax.nn.one_hot(label, num_classes) * real
    return jnp.maximum(heat, gy[:, None, None] * gx[None, :, None] *
                       channel), None

  # A loop over boxes: one [n, n, K] map alive, whatever the box budget.
  heat, _ = jax.lax.scan(
      add_box, jnp.zeros((map_size, map_size, num_classes), jnp.float32),
      (cells, sigmas, labels, box_mask))
  return heat


def focal_loss_sums(logits, targets):
  """CenterNet's penalty-reduced focal loss, summed per image, and centres.

  ``logits``, ``targets`` ``[B, n, n, K]``; positives are the cells where
  the target is exactly 1. Returns ``(loss sums [B], positives [B])``.
  """
  positive = (targets == 1.0).astype(jnp.float32)
  p = jax.nn.sigmoid(logits)
  log_p, log_not_p = jax.nn.log_sigmoid(logits), jax.nn.log_sigmoid(-logits)
  loss = -(positive * jnp.square(1 - p) * log_p +
           (1 - positive) * (1 - targets) ** 4 * jnp.square(p) * log_not_p)
  return jnp.sum(loss, axis=(1, 2, 3)), jnp.sum(positive, axis=(1, 2, 3))


def box_loss_sums(regression, boxes, box_mask, *, stride: int):
  """L1 of offsets and log sizes at each box's centre cell, summed per image.

  ``regression`` ``[B, n, n, 4]`` (offset x, y; log size x, y). Returns
  ``(sums [B], boxes [B])``.
  """
  cells, offsets, log_sizes = encode_boxes(boxes, stride, regression.shape[1])
  predicted = jax.vmap(lambda r, c: r[c[:, 1], c[:, 0]])(regression, cells)
  error = jnp.abs(predicted - jnp.concatenate([offsets, log_sizes], axis=-1))
  return (jnp.sum(jnp.sum(error, axis=-1) * box_mask, axis=1),
          jnp.sum(box_mask, axis=1))


# --------------------------------------------------------------------- head ---


class DetectionHead(nn.Module):
  """Feature map ``[B, n, n, C]`` → (heatmap logits ``[B, n, n, K]``,
  box regression ``[B, n, n, 4]``): two 3×3 conv + GroupNorm + swish layers
  shared by two 1×1 outputs."""
  num_classes: int
  width: int = 64

  @nn.compact
  def __call__(self, features):
    x = features.astype(jnp.float32)
    for _ in range(2):
      x = nn.Conv(self.width, (3, 3))(x)
      x = nn.swish(nn.GroupNorm(math.gcd(self.width, 8))(x))
    bias = -math.log((1 - PRIOR_PROBABILITY) / PRIOR_PROBABILITY)
    logits = nn.Conv(self.num_classes, (1, 1), name="heatmap",
                     bias_init=nn.initializers.constant(bias))(x)
    regression = nn.Conv(4, (1, 1), name="box")(x)
    return logits, regression


# ----------------------------------------------------------------- decoding ---


def decode_detections(logits, regression, *, stride: int, top_k: int,
                      image_size: int):
  """The ``top_k`` highest local maxima of the heatmaps, as boxes.

  A cell counts when its probability is the maximum of its 3×3
  neighbourhood in its class (CenterNet's replacement for NMS).

  Returns:
    ``boxes`` ``[B, top_k, 4]`` ``(x0, y0, x1, y1)`` clipped to the image,
    ``scores`` ``[B, top_k]`` (probabilities; 0 for non-maxima) and
    ``classes`` int32 ``[B, top_k]``, best first.
  """
  batch, n, _, num_classes = logits.shape
  heat = jax.nn.sigmoid(logits.astype(jnp.float32))
  peaks = nn.max_pool(heat, (3, 3), strides=(1, 1), padding="SAME")
  heat = jnp.where(heat == peaks, heat, 0.0)
  scores, flat = jax.lax.top_k(heat.reshape(batch, -1), top_k)
  classes = flat % num_classes
  position = flat // num_classes
  cells = jnp.stack([position % n, position // n], axis=-1)
  values = jax.vmap(lambda r, c: r[c[:, 1], c[:, 0]])(regression, cells)
  boxes = decode_boxes(cells, values[..., :2], values[..., 2:], stride)
  return jnp.clip(boxes, 0.0, image_size), scores, classes.astype(jnp.int32)


def draw_boxes(images, boxes, classes, show):
  """Images ``[B, S, S, 3]`` with box outlines (1 pixel) in class colours.

  ``boxes`` ``[B, M, 4]`` pixels, ``classes`` ``[B, M]``, ``show`` bool
  ``[B, M]``; later boxes are drawn over earlier ones.
  """
  size = images.shape[1]
  centre = jnp.arange(size, dtype=jnp.float32) + 0.5
  palette = jnp.array(PALETTE)

  def outline(box):
    x0, y0, x1, y1 = jnp.round(box)
    outer_x = (centre >= x0) & (centre < x1)
    outer_y = (centre >= y0) & (centre < y1)
    inner_x = (centre >= x0 + 1) & (centre < x1 - 1)
    inner_y = (centre >= y0 + 1) & (centre < y1 - 1)
    return ((outer_y[:, None] & outer_x[None, :]) &
            ~(inner_y[:, None] & inner_x[None, :]))

  def one(image, image_boxes, image_classes, image_show):
    def paint(canvas, box):
      box_coords, label, visible = box
      edge = outline(box_coords) & visible
      return jnp.where(edge[..., None], palette[label % len(PALETTE)],
                       canvas), None
    drawn, _ = jax.lax.scan(paint, image, (image_boxes, image_classes,
                                           image_show))
    return drawn

  return jax.vmap(one)(images, boxes, classes, show)


# --------------------------------------------------------------------- task ---


class DetectionTask(step.Task):
  """CenterNet-style detection of ``num_classes`` classes on ``backbone``."""
  visualization_columns = ("true boxes", "predicted boxes")

  def __init__(self, config: ml_collections.ConfigDict, backbone: Backbone,
               num_classes: int):
    self.validate_config(config)
    self.config = ml_collections.FrozenConfigDict(config)
    self.backbone = backbone
    self.num_classes = num_classes
    self.head = DetectionHead(num_classes, config.head_width)
    run_config.check(config.image_size % backbone.stride == 0, "image_size",
                     f"divide by the backbone's stride {backbone.stride}",
                     config.image_size)
    self.map_size = config.image_size // backbone.stride

  @staticmethod
  def validate_config(config: ml_collections.ConfigDict) -> None:
    for key in ("image_size", "max_boxes", "head_width", "top_k"):
      run_config.check(config[key] >= 1, key, "be >= 1", config[key])
    run_config.check(config.encoder_lr_scale > 0, "encoder_lr_scale", "be > 0",
                     config.encoder_lr_scale)

  def init_params(self, rng):
    size = self.config.image_size
    features = jax.eval_shape(self.feature_map, self.backbone.params,
                              jnp.zeros((1, size, size, 3)))
    head = self.head.init(rng, jnp.zeros(features.shape, jnp.float32))
    return {"backbone": self.backbone.params, "head": head["params"]}

  def feature_map(self, backbone_params, images):
    """The backbone's map ``[B, n, n, C]`` (without a Mobile-Former's tokens)."""
    return layers.split_encoder_output(
        self.backbone.encode(backbone_params, images))[0]

  def optimizer(self, config) -> optax.GradientTransformation:
    """The trainer's AdamW for the head; the backbone frozen or slower."""
    if config.freeze_backbone:
      backbone = optax.set_to_zero()
    else:
      slower = run_config.from_dict(run_config.to_dict(config))
      slower.learning_rate = config.learning_rate * config.encoder_lr_scale
      backbone = step.create_optimizer(slower)
    return optax.multi_transform(
        {"head": step.create_optimizer(config), "backbone": backbone},
        lambda params: traverse_util.path_aware_map(
            lambda path, _: path[0], params))

  def predict(self, params, images):
    """``(heatmap logits [B, n, n, K], box regression [B, n, n, 4])``."""
    features = self.feature_map(params["backbone"], images)
    if self.config.freeze_backbone:
      features = jax.lax.stop_gradient(features)
    return self.head.apply({"params": params["head"]}, features)

  def _loss_sums(self, params, batch):
    logits, regression = self.predict(params, batch["image"])
    targets = jax.vmap(lambda b, l, m: heatmap_targets(
        b, l, m, stride=self.backbone.stride, map_size=self.map_size,
        num_classes=self.num_classes))(batch["boxes"], batch["labels"],
                                       batch["box_mask"])
    heat, centres = focal_loss_sums(logits, targets)
    box, boxes = box_loss_sums(regression, batch["boxes"], batch["box_mask"],
                               stride=self.backbone.stride)
    return heat, centres, box, boxes

  def loss(self, params, batch, example_keys):
    del example_keys  # Deterministic.
    heat, centres, box, boxes = self._loss_sums(params, batch)
    heatmap_loss = jnp.sum(heat) / jnp.maximum(jnp.sum(centres), 1.0)
    box_loss = jnp.sum(box) / jnp.maximum(jnp.sum(boxes), 1.0)
    return heatmap_loss + box_loss, {"heatmap_loss": heatmap_loss,
                                     "box_loss": box_loss}

  def eval_metrics(self, params, batch, example_keys):
    """Per image: its heatmap and box losses (each over its own boxes)."""
    del example_keys
    heat, centres, box, boxes = self._loss_sums(params, batch)
    heatmap_loss = heat / jnp.maximum(centres, 1.0)
    box_loss = box / jnp.maximum(boxes, 1.0)
    return {"heatmap_loss": heatmap_loss, "box_loss": box_loss,
            "loss": heatmap_loss + box_loss}

  def detect(self, params, images):
    """Detections of `decode_detections` (``config.top_k`` per image)."""
    logits, regression = self.predict(params, images)
    return decode_detections(logits, regression, stride=self.backbone.stride,
                             top_k=self.config.top_k,
                             image_size=self.config.image_size)

  def visualize(self, params, batch, example_keys):
    """True boxes | predictions scoring at least `DRAW_SCORE` (class colours)."""
    del example_keys
    images = batch["image"]
    truth = draw_boxes(images, batch["boxes"], batch["labels"],
                       batch["box_mask"] > 0)
    boxes, scores, classes = self.detect(params, images)
    predicted = draw_boxes(images, boxes[:, ::-1], classes[:, ::-1],
                           scores[:, ::-1] >= DRAW_SCORE)
    return [truth, predicted]
