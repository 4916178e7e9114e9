# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
r"""Detection transfer: a CenterNet-style head on a (frozen) pre-trained encoder.

Builds the encoder of --pretrained_workdir (a pretrain_masked workdir: its
config.json gives the architecture, its newest checkpoint the weights; with
config.random_init, random weights of the same architecture: the control),
trains the head of `finola_jax.tasks.detection` on a COCO-format dataset
(config.dataset="coco:DIR": `sources.CocoSource`, COCO's layout; or a
prepared TFDS detection set, config.dataset="coco/2017" with
config.data_dir: `sources.TfdsDetectionSplit`; config.train_split and
config.eval_split name other splits) with the one trainer
(checkpoints, resume, NaN guard), then scores the final checkpoint on the
evaluation split with pycocotools' COCOeval: AP, AP50, AP75, APs, APm, APl
to WORKDIR/detection.json and TensorBoard, and a labelled PNG of true
against predicted boxes to WORKDIR/images/. The benchmark
(configs/detect_fashion_mnist.py):

  python3 -m experiments.make_fashion_detection \
    --idx=../shared/data/fashion_mnist --out=/tmp/fashion_det
  python3 -m experiments.detect --workdir=/tmp/det_finola \
    --config=experiments/configs/detect_fashion_mnist.py \
    --config.dataset=coco:/tmp/fashion_det --pretrained_workdir=/tmp/fmnist_masked
  ... --config.random_init=True          # the random-init control

COCO 2017 as TFDS prepared it (`tfds build coco/2017 --data_dir=$TFDS_DIR`
on a machine that can download it; nothing is downloaded here):

  python3 -m experiments.detect --workdir=/tmp/det_coco \
    --config.dataset=coco/2017 --config.data_dir=$TFDS_DIR \
    --pretrained_workdir=/tmp/masked

--eval_only scores the newest checkpoint of WORKDIR again (its config.json
holds the encoder's architecture: no --pretrained_workdir needed).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
from typing import Any, Dict

import jax
import ml_collections
import numpy as np
import PIL.Image
import PIL.ImageDraw
from absl import app
from absl import flags
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from experiments import linear_probe
from finola_jax import tasks
from finola_jax.data import coco
from finola_jax.data import input_pipeline
from finola_jax.data import sources
from finola_jax.runner import launch
from finola_jax.runner import trainer
from finola_jax.tasks import detection
from finola_jax.train import checkpointing
from finola_jax.train import run_config
from finola_jax.train import step as step_lib
from finola_jax.train import writers

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                              "configs", "detect.py")
FLAGS = flags.FLAGS
# detection.json's keys, in COCOeval.stats order.
METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
# The labelled pictures' images are enlarged to at least this side.
_PICTURE_SIZE = 256


def define_flags(flag_values: flags.FlagValues = FLAGS, sys_argv=None) -> None:
  launch.define_flags(DEFAULT_CONFIG, flag_values, sys_argv)
  flags.DEFINE_string("pretrained_workdir", None, "Workdir of pretrain_masked: "
                      "its config.json gives the encoder's architecture, its "
                      "newest readable checkpoint the weights (unless "
                      "config.random_init). Needed to start a run.",
                      flag_values=flag_values)


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks the detection keys (the dataset is checked by `load_splits`)."""
  run_config.check_choice(config, "task", ["detection"])
  run_config.check(bool(config.dataset), "dataset",
                   "be set ('coco:DIR', COCO's layout, or a prepared TFDS "
                   "detection set such as 'coco/2017')", config.dataset)
  run_config.check(config.max_eval_examples is None or
                   config.max_eval_examples >= 1, "max_eval_examples",
                   "be None or >= 1", config.max_eval_examples)
  detection.DetectionTask.validate_config(config)
  run_config.validate_training(config)


def load_splits(config: ml_collections.ConfigDict
                ) -> tuple[coco.DetectionData, coco.DetectionData]:
  """(training, evaluation) splits of ``config.dataset``, with boxes.

  Its source (``sources.from_name``) is checked first, so a dataset without
  boxes or with a malformed annotation file is refused before anything is
  written.

  Raises:
    sources.DatasetError: what the user must fix, named.
  """
  source = trainer.checked_source(
      config, splits=(config.train_split, config.eval_split))
  try:
    return tuple(source.detection_split(split, image_size=config.image_size,
                                        max_boxes=config.max_boxes)
                 for split in sources.SPLITS)
  except sources.DatasetError as e:
    raise sources.DatasetError(
        f"config.dataset={config.dataset!r}: {e}") from None


def with_backbone(config: ml_collections.ConfigDict, workdir: str,
                  pretrained_workdir: str | None) -> ml_collections.ConfigDict:
  """``config`` with ``backbone`` (the pre-training's config) and its path.

  From --pretrained_workdir when given; else, to resume a run, from
  WORKDIR/config.json.
  """
  config = run_config.from_dict(run_config.to_dict(config))
  if pretrained_workdir is not None:
    config.backbone = linear_probe.read_pretraining(pretrained_workdir)
    config.pretrained_workdir = str(checkpointing.absolute(pretrained_workdir))
    return config
  try:
    saved = run_config.read(workdir)
  except FileNotFoundError:
    raise run_config.ConfigError(
        "--pretrained_workdir is needed to start a run (the encoder's "
        "architecture, and its weights unless config.random_init).") from None
  config.backbone, config.pretrained_workdir = (saved.backbone,
                                                saved.pretrained_workdir)
  return config


def create_task(config: ml_collections.ConfigDict, num_classes: int, *,
                weights: bool = True) -> detection.DetectionTask:
  """The detector on ``config.backbone``'s encoder.

  ``weights=False`` (a checkpoint will replace them) and ``random_init``
  initialize the encoder randomly; otherwise it is read from the
  pre-training's newest checkpoint.
  """
  pretraining = config.backbone
  source = ml_collections.ConfigDict(dict(
      raw_pixels=False, seed=config.seed,
      random_init=config.random_init or not weights))
  try:
    encode, params, _ = linear_probe.load_encoder(source, pretraining,
                                                  config.pretrained_workdir)
  except FileNotFoundError as e:
    raise run_config.ConfigError(f"--pretrained_workdir: {e}") from e
  backbone = detection.Backbone(encode, params, pretraining.stride)
  return detection.DetectionTask(config, backbone, num_classes)


# ---------------------------------------------------------------- COCOeval ---


def predictions(task: detection.DetectionTask, params, evaluation,
                layout) -> tuple[Dict[str, np.ndarray], Dict[str, np.ndarray]]:
  """Detections of every evaluated image, from all processes.

  Returns ``(detections, first batch)``: ``detections`` ``index [N]``,
  ``boxes [N, top_k, 4]`` (input pixels), ``scores``, ``classes``.
  """
  steps = step_lib.ParallelSteps(task, task.config.seed)
  replicated = steps.replicate(params)
  detect = jax.pmap(task.detect, axis_name=step_lib.AXIS)
  parts, first = [], None
  for batch in evaluation.eval_batches(layout, task.config.max_eval_examples):
    first = batch if first is None else first
    boxes, scores, classes = jax.device_get(detect(replicated, batch["image"]))
    parts.append({"index": batch["index"], "boxes": boxes, "scores": scores,
                  "classes": classes})
  local = {k: np.concatenate([p[k].reshape((-1,) + p[k].shape[2:])
                              for p in parts]) for k in parts[0]}
  if jax.process_count() > 1:
    local = {k: np.asarray(v).reshape((-1,) + v.shape[2:]) for k, v in
             multihost_utils.process_allgather(local).items()}
  real = local["index"] >= 0
  return {k: v[real] for k, v in local.items()}, first


def coco_results(detections: Dict[str, np.ndarray],
                 split: coco.DetectionData) -> list:
  """COCO's result list: boxes back in each image's own pixels."""
  results = []
  for row, boxes, scores, classes in zip(detections["index"],
                                         detections["boxes"],
                                         detections["scores"],
                                         detections["classes"]):
    height, width = split.sizes[row]
    scale = coco.letterbox_scale(height, width, split.image_size)
    for (x0, y0, x1, y1), score, label in zip(boxes / scale, scores, classes):
      if score > 0 and x1 > x0 and y1 > y0:  # 0: not a local maximum.
        results.append({"image_id": int(split.image_ids[row]),
                        "category_id": split.category_ids[label],
                        "bbox": [float(x0), float(y0), float(x1 - x0),
                                 float(y1 - y0)],
                        "score": float(score)})
  return results


def coco_metrics(ground_truth: Dict[str, Any], results: list,
                 image_ids) -> Dict[str, Any]:
  """COCOeval's box AP on ``image_ids`` against ``ground_truth`` (a
  COCO-format dict, `coco.DetectionData.ground_truth`): `METRICS` (None
  where undefined: no true box of that size)."""
  from pycocotools import coco as pycoco  # pylint: disable=g-import-not-at-top
  from pycocotools import cocoeval  # pylint: disable=g-import-not-at-top
  if not results:
    return {key: 0.0 for key in METRICS}
  with contextlib.redirect_stdout(io.StringIO()):
    truth = pycoco.COCO()
    truth.dataset = ground_truth
    truth.createIndex()
    evaluator = cocoeval.COCOeval(truth, truth.loadRes(results), "bbox")
    evaluator.params.imgIds = sorted(int(i) for i in image_ids)
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
  return {key: (None if value < 0 else float(value))
          for key, value in zip(METRICS, evaluator.stats)}


def labelled_picture(batch, detections, names, count: int) -> np.ndarray:
  """True | predicted boxes (score ≥ DRAW_SCORE), named, on ``count`` images."""
  images = batch["image"].reshape((-1,) + batch["image"].shape[2:])
  real = batch["mask"].reshape(-1) > 0
  columns = [[], []]
  for i in np.flatnonzero(real)[:count]:
    factor = max(1, math.ceil(_PICTURE_SIZE / images.shape[1]))
    base = PIL.Image.fromarray(np.round(255 * images[i]).astype(np.uint8))
    base = base.resize((factor * images.shape[2], factor * images.shape[1]),
                       PIL.Image.Resampling.NEAREST)
    boxes_mask = batch["box_mask"].reshape(-1, batch["box_mask"].shape[-1])[i]
    truth = [(box, label, None) for box, label, m in zip(
        batch["boxes"].reshape(-1, *batch["boxes"].shape[-2:])[i],
        batch["labels"].reshape(-1, batch["labels"].shape[-1])[i],
        boxes_mask) if m > 0]
    predicted = [(box, label, score) for box, label, score in zip(
        detections["boxes"][i], detections["classes"][i],
        detections["scores"][i]) if score >= detection.DRAW_SCORE]
    for column, boxes in zip(columns, (truth, predicted)):
      picture = base.copy()
      draw = PIL.ImageDraw.Draw(picture)
      for box, label, score in boxes:
        colour = tuple(int(255 * c) for c in
                       detection.PALETTE[label % len(detection.PALETTE)])
        draw.rectangle([factor * v for v in box], outline=colour, width=2)
        text = names[label] if score is None else f"{names[label]} {score:.2f}"
        draw.text((factor * box[0] + 2, factor * box[1] + 1), text, fill=colour)
      column.append(np.asarray(picture, np.float32) / 255.0)
  return writers.image_grid([np.stack(c) for c in columns],
                            detection.DetectionTask.visualization_columns)


def evaluate_coco(task: detection.DetectionTask, config, workdir: str,
                  evaluation: coco.DetectionData) -> Dict[str, Any]:
  """Scores the newest checkpoint; writes detection.json, TensorBoard, PNG."""
  step, params = checkpointing.restore_latest_params(
      workdir, step_lib.abstract_train_state(task, config))
  layout = input_pipeline.batch_layout(config.batch_size)
  detections, first = predictions(task, params, evaluation, layout)
  metrics = coco_metrics(evaluation.ground_truth(),
                         coco_results(detections, evaluation),
                         evaluation.image_ids[detections["index"]])
  result = dict(metrics, step=step, num_images=len(detections["index"]),
                eval_split=evaluation.name, dataset=config.dataset,
                backbone=("random_init" if config.random_init else
                          config.pretrained_workdir),
                freeze_backbone=config.freeze_backbone)
  if jax.process_index() == 0:
    path = epath.Path(workdir) / "detection.json"
    path.write_text(json.dumps(result, indent=2, sort_keys=True))
    writer = writers.create_writer(workdir)
    writer.write_scalars(step, {f"coco/{k}": v for k, v in metrics.items()
                                if v is not None})
    first_rows = {k: v[:np.sum(first["mask"] > 0)] for k, v in detections.items()}
    picture = labelled_picture(first, first_rows, evaluation.category_names,
                               config.num_images)
    writer.write_images(step, {"detections": picture[None]})
    writer.flush()
    writers.save_png(epath.Path(workdir) / "images" /
                     f"detections_{step:07d}.png", picture)
  return result


# ------------------------------------------------------------------ program ---


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       pretrained_workdir: str | None = None,
                       eval_only: bool = False) -> Dict[str, Any]:
  """Trains (unless ``eval_only``) and scores the detector; detection.json.

  Raises:
    ConfigError: an inconsistent config or pre-training workdir; nothing was
      written.
    sources.DatasetError: an unusable dataset (named); nothing was written.
  """
  if eval_only:
    saved = run_config.read(workdir)
    if config is None:
      config = saved
    else:
      config = with_backbone(config, workdir, None)
      run_config.check_same_run(workdir, saved, config,
                                tasks.ADDED_KEY_DEFAULTS)
  else:
    config = with_backbone(config, workdir, pretrained_workdir)
  validate_config(config)
  train, evaluation = load_splits(config)
  task = create_task(config, train.num_classes, weights=not eval_only)
  if not eval_only:
    layout = input_pipeline.batch_layout(config.batch_size)
    trainer.train_and_evaluate(
        config, workdir, task=task,
        train_batches=lambda start: train.train_batches(
            start, seed=config.seed, layout=layout),
        eval_batches=lambda: evaluation.eval_batches(
            layout, config.max_eval_examples))
  result = evaluate_coco(task, config, workdir, evaluation)
  logging.info("COCO box AP: %s", result)
  return result


def main(argv, flag_values: flags.FlagValues = FLAGS) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if flag_values.eval_dir is not None:
    raise app.UsageError("--eval_dir is not supported by detect: evaluation "
                         "needs boxes (config.eval_split).")
  launch.quiet_library_logs()
  input_pipeline.hide_accelerators_from_tensorflow()
  launch.initialize_distributed(flag_values)
  workdir = flag_values.workdir
  with launch.preemption_ends_cleanly(), launch.program_errors():
    config = (launch.given_config(workdir, flag_values)
              if flag_values.eval_only else flag_values.config)
    result = train_and_evaluate(
        config, workdir, pretrained_workdir=flag_values.pretrained_workdir,
        eval_only=flag_values.eval_only)
    scores = ", ".join(
        f"{k}={'n/a' if result[k] is None else f'{result[k]:.4f}'}"
        for k in METRICS)
    print(f"COCO box AP on {result['eval_split']} ({result['num_images']} "
          f"images, step {result['step']}): {scores}; written to "
          f"{epath.Path(workdir) / 'detection.json'}", flush=True)


if __name__ == "__main__":
  define_flags()
  app.run(main)
