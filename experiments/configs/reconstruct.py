# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
r"""The main job: reconstruction from one vector, offline on a CPU.

The photographs bundled with scikit-image (13 for training, 3 held out),
32×32 crops, q ∈ R²⁵⁶ unrolled from the centre of an 8×8 map (stride 4),
upsampled to pixels; 2,400 steps of batch 32. The default config of
``experiments.reconstruct``:

  python3 -m experiments.reconstruct --workdir=/tmp/finola_recon
"""

import ml_collections
from ml_collections import config_dict


# The main job's model settings before the study rounds that changed them
# (docs/results/study.md: q from the flattened map, A and B started
# skew-symmetric at scale 1, a ResNet of two stages, twice as wide, both
# walk orders averaged).
# Configs and tools whose tables were measured with these, or whose sizes
# the new ones were not measured at, set them.
BEFORE_STUDY = {"pooling": "mean", "matrix_init": "normal",
                "matrix_init_scale": 0.1, "encoder_depth": 3,
                "encoder_width": 16, "path": "vertical_first"}


def get_config() -> ml_collections.ConfigDict:
  """Every setting of a reconstruction run (see the comments)."""
  config = ml_collections.ConfigDict()
  # Which experiment: finola_jax.tasks.create_task builds it.
  config.task = "reconstruction"

  # Data. dataset: "embedded" (bundled photographs, offline),
  # "folder:/path/to/images" or a tfds name ("imagenet2012").
  config.dataset = "embedded"
  config.data_dir = config_dict.placeholder(str)  # tfds data_dir
  config.image_size = 32
  # Random channel order and per-channel gains in [0.7, 1.3] for training.
  config.colour_augmentation = True
  # Streamed (TFDS) images: decode only each random crop's window of a JPEG
  # and resize it, rather than the whole image first. Same crop boxes;
  # several times cheaper on the host (docs/benchmarks.md, "Input
  # pipeline: can one host feed the step?"). In-memory sources (embedded,
  # folder, idx) ignore it.
  config.decode_crop_only = True

  # Model. The map is (image_size / stride)²; stride 1 is the paper's setting.
  config.stride = 4
  config.channels = 256  # C: A and B are C×C
  # The encoder: "resnet" (encoder_width, encoder_depth) or a Mobile-Former
  # size ("mobile_former_26m" ... "mobile_former_508m", finola_jax.models.
  # mobile_former.SIZES) at feature stride encoder_stride (None:
  # config.stride; the masked task requires that).
  config.encoder = "resnet"
  config.encoder_stride = config_dict.placeholder(int)
  # 32 (stages of 64 and 128 channels): +0.42 and +0.48 dB held out on two
  # seeds, Kodak +0.36 and +0.59; its step costs what width 16's did
  # before the upsampler's convolutions moved to the lower resolution
  # (docs/results/study.md#a-wider-encoder-and-both-walk-orders).
  config.encoder_width = 32
  # Two stages: the encoder ends at 8×8 (stride 4, the walk's map size),
  # and q is flattened from 64 positions instead of 16: +0.42 and +0.50 dB
  # held out on two seeds, Kodak +0.69 and +0.30, in the same wall
  # (docs/results/study.md#a-shallower-encoder-at-the-full-budget).
  config.encoder_depth = 2
  config.decoder_width = 32
  # The upsampler's hidden convolutions: "none" (plain, the paper's), or a
  # normalization before each swish: "group" (GroupNorm, as in the
  # encoder's blocks) or "layer" (LayerNorm over each position's channels).
  config.upsampler_norm = "none"
  # finola: normalized unroll; linear: without normalization (QB-Heat);
  # dense: q → dense layer → map.
  config.decoder = "finola"
  # Walk order (finola_jax.unroll): "average", the mean of the
  # vertical-first and horizontal-first maps (they differ: A and B do not
  # commute): +0.60 and +0.50 dB held out, Kodak +0.14 and +0.35, over
  # "vertical_first" on two seeds, for 1.05-1.08x the training time
  # (docs/results/study.md#a-wider-encoder-and-both-walk-orders).
  config.path = "average"
  config.matrix_init_scale = 1.0  # A, B from G ~ N(0, scale² / C)
  # "normal": G; "skew": (G − Gᵀ)/√2, no symmetric part, so a step turns z
  # rather than stretching it (layers.FinolaMatrices). Skew at scale 1: the
  # walk's map varies over the positions from the first step and |z| does
  # not grow; +0.84 and +0.98 dB over "normal" at 0.1 on two seeds
  # (docs/results/study.md, "The walk's map").
  config.matrix_init = "skew"
  # A, B start at that − damping · I: their symmetric parts shifted
  # negative, so z's spread settles along the walk instead of growing
  # (docs/results/study.md).
  config.matrix_init_damping = 0.0
  # Multi-path FINOLA: M initial vectors, path m unrolled with its own
  # A_m, B_m; the M maps combined by "mean" or "concat" (the decoder then
  # reads M·C channels). pooling makes the vectors from the encoder's last
  # map: "mean" (then a dense layer), "attention" (M learned queries),
  # "flatten" (one dense layer from the whole map: it keeps where each
  # feature is; its weights fix the image size), or "tokens": a
  # Mobile-Former's first M tokens (paths <= its tokens).
  config.paths = 1
  # flatten: +1.0 dB held out (+0.7 on Kodak) over mean pooling at the same
  # steps, 26 s more (docs/results/study.md#where-the-encoder-loses).
  config.pooling = "flatten"
  config.combine = "mean"
  # q's size: "none" (as pooled), "rms" (unit RMS over C, then a learned
  # per-channel scale) or "cap" (scaled down to unit RMS when larger): a
  # large q leaves FINOLA's fixed-size increments little to add
  # (docs/results/study.md#bounding-q).
  config.q_norm = "none"

  # Numerics. precision: compute dtype of convolutions and the unroll
  # ("float32" or "bfloat16"; parameters and the unroll's state stay float32).
  config.precision = "float32"
  # Matmul precision of the unroll: None (JAX's default) or a name in
  # finola_jax.core.PRECISION_NAMES ("default", "high", "highest", ...).
  config.matmul_precision = config_dict.placeholder(str)
  config.unroll_implementation = "auto"
  # Memory: decode this many examples at a time, recomputing the decoder in
  # the backward pass (0: the whole per-device batch at once). Same values
  # and gradients; at stride 1 it keeps the decoder's full-resolution
  # activations of one chunk alive instead of the batch's.
  config.decoder_chunk = 0

  # Optimization: AdamW, linear warm-up then cosine decay to 1 % of the peak,
  # after clipping the global gradient norm.
  # 2,400: the job is bound by its steps at batch 32 (smaller or larger
  # batches lose; docs/results/study.md#batch-against-steps), and 2,400
  # fit 10 minutes of two idle cores (9 min 7 s measured).
  config.steps = 2400
  config.batch_size = 32  # global: over all processes and devices
  config.learning_rate = 2e-3
  # A and B learn at this × learning_rate (see train.step.create_optimizer).
  # A quarter: at the full rate |z| grows as A and B learn, and the main
  # job scored lower (docs/results/study.md#the-main-job-one-change-at-a-time).
  config.matrix_learning_rate_scale = 0.25
  config.warmup_steps = 100
  config.weight_decay = 1e-4
  config.grad_clip_norm = 1.0
  config.seed = 0  # initialization, batches and masks

  # Bookkeeping (may change when a run is resumed).
  config.log_every = 50
  config.eval_every = 500
  config.checkpoint_every = 250
  config.keep_checkpoints = 3
  config.num_images = 8  # examples drawn in each picture
  return config
