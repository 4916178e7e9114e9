# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
r"""Masked-FINOLA self-supervised pre-training (FINOLA paper, experiment 2).

One quadrant of each image stays visible; the encoder sees only it, and
FINOLA extrapolates the whole feature map from the visible corner; the
loss is the pixel MSE on the three masked quadrants. Offline default:

  python -m experiments.pretrain_masked --workdir=/tmp/finola_masked

then probe the frozen encoder:

  python -m experiments.linear_probe --workdir=/tmp/finola_probe \
    --pretrained_workdir=/tmp/finola_masked

ImageNet (tfds manual dir under --data_dir), on accelerators:

  python -m experiments.pretrain_masked --workdir=gs://bucket/masked \
    --dataset=imagenet2012 --data_dir=$TFDS_DATA_DIR --image_size=224 \
    --stride=16 --channels=512 --encoder_width=64 --encoder_depth=5 \
    --batch_size=1024 --steps=200000 --norm_pix_loss --precision=bfloat16
"""

import jax.numpy as jnp
from absl import app
from absl import flags

from finola_jax.models import layers
from finola_jax.models import masked
from finola_jax.tasks import masked as masked_task
from finola_jax.train import launch

launch.define_flags(image_size=32, stride=4, channels=128, steps=1200,
                    batch_size=32, learning_rate=2e-3, warmup_steps=100,
                    eval_every=600, checkpoint_every=300)
flags.DEFINE_enum("masking", "quadrant", list(masked.MASKINGS),
                  "quadrant: one visible quadrant, FINOLA extrapolates from its "
                  "corner; random: random s×s patches visible, pooled into q "
                  "and unrolled from the centre.")
flags.DEFINE_float("mask_ratio", 0.75, "Fraction of patches masked "
                   "(--masking=random).")
flags.DEFINE_enum("extrapolation", "finola", list(layers.AUTOREGRESSIONS),
                  "finola: normalized; linear: QB-Heat's un-normalized "
                  "extrapolation.")
flags.DEFINE_bool("norm_pix_loss", False, "Per-patch normalized pixel targets "
                  "(as MAE), patches of --patch_size.")
flags.DEFINE_integer("patch_size", 8, "Patch size of --norm_pix_loss.")
FLAGS = flags.FLAGS


def validate_flags() -> None:
  if FLAGS.image_size % (2 * FLAGS.stride):
    raise app.UsageError(
        f"--image_size={FLAGS.image_size} must divide by 2·--stride="
        f"{2 * FLAGS.stride}: each quadrant must map to whole feature positions.")
  if (1 << FLAGS.encoder_depth) < FLAGS.stride:
    raise app.UsageError(
        f"--encoder_depth={FLAGS.encoder_depth} stages cannot reach "
        f"--stride={FLAGS.stride}: need at least {layers.log2(FLAGS.stride)}.")
  if not 0.0 < FLAGS.mask_ratio < 1.0:
    raise app.UsageError(f"--mask_ratio must be in (0, 1), got {FLAGS.mask_ratio}.")
  if FLAGS.norm_pix_loss and (FLAGS.patch_size < 1 or FLAGS.image_size % FLAGS.patch_size):
    raise app.UsageError(f"--patch_size={FLAGS.patch_size} must divide "
                         f"--image_size={FLAGS.image_size}.")


def build_task() -> masked_task.MaskedTask:
  validate_flags()
  model = masked.MaskedFinola(
      image_size=FLAGS.image_size, stride=FLAGS.stride, channels=FLAGS.channels,
      encoder_width=FLAGS.encoder_width, encoder_depth=FLAGS.encoder_depth,
      masking=FLAGS.masking, mask_ratio=FLAGS.mask_ratio,
      extrapolation=FLAGS.extrapolation, path=FLAGS.path,
      decoder_width=FLAGS.decoder_width, dtype=jnp.dtype(FLAGS.precision))
  return masked_task.MaskedTask(model, norm_pix_loss=FLAGS.norm_pix_loss,
                                patch_size=FLAGS.patch_size)


if __name__ == "__main__":
  app.run(launch.main_wrapper(build_task))
