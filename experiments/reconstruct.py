# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
r"""Reconstruction from a single vector (FINOLA paper, experiment 1).

An encoder maps each image to one vector q; the decoder unrolls q from the
centre of a feature map with FINOLA (or a baseline, --decoder) and turns the
map into pixels. Offline default (photographs bundled with scikit-image):

  python -m experiments.reconstruct --workdir=/tmp/finola_recon

ImageNet at the paper's 256×256, map at image resolution (s=1), on a host
with accelerators (tfds manual dir prepared under --data_dir):

  python -m experiments.reconstruct --workdir=gs://bucket/recon256 \
    --dataset=imagenet2012 --data_dir=$TFDS_DATA_DIR --image_size=256 \
    --stride=1 --channels=1024 --encoder_width=64 --encoder_depth=5 \
    --batch_size=256 --steps=300000 --learning_rate=1e-3 --warmup_steps=5000 \
    --precision=bfloat16
"""

import jax.numpy as jnp
from absl import app
from absl import flags

from finola_jax.models import autoencoder
from finola_jax.tasks import reconstruction
from finola_jax.train import launch

launch.define_flags(image_size=32, stride=4, channels=256, steps=1200,
                    batch_size=32, learning_rate=2e-3, warmup_steps=100,
                    eval_every=500, checkpoint_every=250)
flags.DEFINE_enum("decoder", "finola", list(autoencoder.DECODERS),
                  "finola: normalized unroll; linear: unroll without "
                  "normalization (QB-Heat); dense: q → dense → map.")
FLAGS = flags.FLAGS


def build_task() -> reconstruction.ReconstructionTask:
  model = autoencoder.Autoencoder(
      image_size=FLAGS.image_size, stride=FLAGS.stride, channels=FLAGS.channels,
      encoder_width=FLAGS.encoder_width, encoder_depth=FLAGS.encoder_depth,
      decoder=FLAGS.decoder, path=FLAGS.path, decoder_width=FLAGS.decoder_width,
      dtype=jnp.dtype(FLAGS.precision))
  return reconstruction.ReconstructionTask(model)


if __name__ == "__main__":
  app.run(launch.main_wrapper(build_task))
