# Copyright 2026 The finola_jax Authors.
# Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Tests for finola_jax.data: in-memory, folder and (mocked) TFDS sources."""

import functools
import itertools
import os
import subprocess
import sys
import types
from unittest import mock

import numpy as np
import pytest

from finola_jax import data
from finola_jax.data import preprocessing
from finola_jax.data import sources
from tests import helpers

KODAK_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "shared",
                         "data", "kodak")
SIZE = 16
NUM_MOCK_EXAMPLES = helpers.NUM_MOCK_EXAMPLES
MOCK_DATASETS = helpers.MOCK_DATASETS
NUM_FOLDER_IMAGES = 12  # Sorted position 9 is held out for validation.


def _colour(index):
  """A distinct colour per index, never black, as uint8 [2] (red, green)."""
  return np.array([40 + 17 * index, 250 - 13 * index], np.uint8)


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
  """Images of varied size, nested folders; image i has constant red/green
  channels `_colour(i)` and a noisy blue channel. Returns (dir, sorted paths)."""
  root = str(tmp_path_factory.mktemp("photos"))
  rng = np.random.default_rng(0)
  paths = []
  for i in range(NUM_FOLDER_IMAGES):
    height, width = 20 + 3 * i, 44 - 2 * i
    image = np.empty((height, width, 3), np.uint8)
    image[..., :2] = _colour(i)
    image[..., 2] = rng.integers(0, 256, (height, width))
    subfolder = ("", "a", os.path.join("a", "b"))[i % 3]
    paths.append(os.path.join(root, subfolder, f"img{i:02d}.png"))
    helpers.write_png(paths[-1], image)
  open(os.path.join(root, "notes.txt"), "w").close()  # Not an image: ignored.
  return root, sorted(paths)


@pytest.fixture(scope="module")
def labeled_folder(tmp_path_factory):
  """Class subfolders "cat" (6), "dog" (5, some nested), "owl" (1); every
  image of class k is filled with `_colour(k)`."""
  root = str(tmp_path_factory.mktemp("labeled"))
  for label, (name, count) in enumerate([("cat", 6), ("dog", 5), ("owl", 1)]):
    for i in range(count):
      image = np.empty((18 + i, 24, 3), np.uint8)
      image[..., :2] = _colour(label)
      image[..., 2] = 0
      nested = "deep" if name == "dog" and i % 2 else ""
      helpers.write_png(os.path.join(root, name, nested, f"{i}.png"), image)
  return root


@pytest.fixture
def mock_tfds(tmp_path):
  """TFDS yields NUM_MOCK_EXAMPLES random examples for any split (and ignores
  slicing such as "test[:2]"). Returns the data_dir to pass."""
  with helpers.mock_tfds(str(tmp_path / "tfds")) as data_dir:
    yield data_dir


def _train_batches(dataset, num_steps=2, *, process_count=1,
                   local_device_count=1, process_index=0, global_batch_size=8,
                   seed=0, start_step=0, data_dir=None,
                   colour_augmentation=True, decode_crop_only=False):
  iterator = data.create_train_iterator(
      dataset, image_size=SIZE, global_batch_size=global_batch_size, seed=seed,
      start_step=start_step, data_dir=data_dir,
      colour_augmentation=colour_augmentation,
      decode_crop_only=decode_crop_only, process_index=process_index,
      process_count=process_count, local_device_count=local_device_count)
  return [batch["image"] for batch in itertools.islice(iterator, num_steps)]


def _global_train_batches(dataset, process_count, local_device_count):
  """Each step's batches from all processes, concatenated: [G, S, S, 3]."""
  per_process = [_train_batches(dataset, process_count=process_count,
                                local_device_count=local_device_count,
                                process_index=p)
                 for p in range(process_count)]
  return [np.concatenate([batches[step].reshape(-1, SIZE, SIZE, 3)
                          for batches in per_process])
          for step in range(len(per_process[0]))]


def _eval_batches(dataset, **kwargs):
  kwargs = {"process_index": 0, "process_count": 1, "local_device_count": 2,
            **kwargs}
  return list(data.create_eval_iterator(dataset, image_size=SIZE, **kwargs))


def _masked_images(batches, key="image"):
  """The real (mask 1) images (or indices) of eval batches: [N, ...]."""
  mask = np.concatenate([b["mask"].reshape(-1) for b in batches])
  values = np.concatenate([b[key].reshape((len(mask) // len(batches),) +
                                          b[key].shape[2:]) for b in batches])
  return values[mask == 1]


# ------------------------------------------------------------------ training ---


def test_embedded_photo_lists_are_disjoint():
  assert not set(data.EMBEDDED_TRAIN_PHOTOS) & set(
      data.EMBEDDED_VALIDATION_PHOTOS)
  assert "cat" not in data.EMBEDDED_TRAIN_PHOTOS  # An alias of "chelsea".


@pytest.mark.parametrize("source", ["embedded", "folder", "tfds",
                                    "tfds_crop_only"])
def test_train_batches_shape_dtype_range(source, photo_folder, mock_tfds):
  dataset = {"embedded": data.EMBEDDED, "folder": "folder:" + photo_folder[0],
             "tfds": "imagenet2012", "tfds_crop_only": "imagenet2012"}[source]
  batches = _train_batches(dataset, process_count=2, local_device_count=2,
                           process_index=1, data_dir=mock_tfds,
                           decode_crop_only=source == "tfds_crop_only")
  for images in batches:
    assert images.shape == (2, 2, SIZE, SIZE, 3)
    assert images.dtype == np.float32
    assert 0.0 <= images.min() and images.max() <= 1.0
    assert images.std() > 0.01  # Not blank.


def test_layout_defaults_come_from_jax():
  iterator = data.create_train_iterator(data.EMBEDDED, image_size=SIZE,
                                        global_batch_size=8, seed=0)
  assert next(iterator)["image"].shape == (4, 2, SIZE, SIZE, 3)  # 4 devices.


@pytest.mark.parametrize("dataset, decode_crop_only", [
    (data.EMBEDDED, False), ("folder", False), ("cifar10", False),
    ("imagenet2012", True)])
def test_train_batches_depend_only_on_seed_and_step(dataset, decode_crop_only,
                                                    photo_folder, mock_tfds):
  if dataset == "folder":
    dataset = photo_folder[0]  # A bare directory path works too.
  batches = functools.partial(_train_batches, dataset, data_dir=mock_tfds,
                              decode_crop_only=decode_crop_only)
  first = batches(5, seed=3)
  again = batches(5, seed=3)
  other_seed = batches(5, seed=4)
  resumed = batches(2, seed=3, start_step=3)
  np.testing.assert_array_equal(np.stack(first), np.stack(again))
  np.testing.assert_array_equal(np.stack(first[3:]), np.stack(resumed))
  assert not np.array_equal(np.stack(first), np.stack(other_seed))
  assert not np.array_equal(first[0], first[1])  # Steps differ.


@pytest.mark.parametrize("source", ["embedded", "folder"])
def test_in_memory_global_batch_is_layout_invariant(source, photo_folder):
  dataset = data.EMBEDDED if source == "embedded" else "folder:" + photo_folder[0]
  reference = _global_train_batches(dataset, 1, 1)
  for process_count, local_device_count in [(1, 4), (2, 2), (4, 2)]:
    batches = _global_train_batches(dataset, process_count, local_device_count)
    np.testing.assert_array_equal(np.stack(batches), np.stack(reference))


def test_folder_training_uses_only_training_images_without_padding(
    photo_folder):
  directory, paths = photo_folder
  # The red/green colours of the files; file `img{i}` has `_colour(i)`.
  colours = {os.path.basename(p): _colour(int(os.path.basename(p)[3:5]))
             for p in paths}
  held_out = colours.pop(os.path.basename(paths[9]))
  batches = np.stack(_train_batches(directory, 10, global_batch_size=16,
                                    colour_augmentation=False))
  red_green = batches.reshape(-1, SIZE * SIZE, 3)[..., :2] * 255
  # Each crop is one colour: no sample fell into another image or padding.
  np.testing.assert_allclose(red_green, red_green[:, :1].repeat(SIZE * SIZE, 1),
                             atol=1e-3)
  used = np.round(red_green[:, 0])
  train_colours = np.stack(list(colours.values()))
  distances = np.abs(used[:, None] - train_colours[None]).max(axis=-1)
  assert distances.min(axis=1).max() == 0  # Every crop: a training image.
  assert not np.any(np.all(used == held_out, axis=-1))
  assert len(np.unique(used, axis=0)) > 5  # Images are sampled broadly.


def _permutation_and_gains(source, target):
  """(p, g), g in range, with target == clip(source[:, p] * g, 0, 1), or None.

  source, target: [pixels, 3]. A gain is fitted where neither clipping nor a
  dark source pixel makes the ratio uninformative; a channel clipped to 1
  everywhere gets gain NaN.
  """
  low, high = preprocessing.COLOUR_GAIN_RANGE
  for permutation in itertools.permutations(range(3)):
    permuted = source[:, permutation]
    gains = np.full(3, np.nan)
    for c in range(3):
      usable = (target[:, c] < 1) & (permuted[:, c] > 0.05)
      if usable.any():
        gains[c] = np.median(target[usable, c] / permuted[usable, c])
    saturated = np.isnan(gains)
    fitted = np.clip(permuted * np.where(saturated, high, gains), 0, 1)
    in_range = np.all((low - 1e-4 <= gains[~saturated]) &
                      (gains[~saturated] <= high + 1e-4))
    # Constant channels fit several orders; only one has gains in range.
    if in_range and np.allclose(fitted, target, atol=1e-5):
      return permutation, gains
  return None


def _streamed_batches(encoded, *, decode_crop_only, seed=0):
  """Three batches of 4 of `sources.streaming_train_batches` from step 2."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  batches = sources.streaming_train_batches(
      tf.data.Dataset.from_tensor_slices(encoded).repeat(), image_size=SIZE,
      batch_size=4, batch_seed=tf.constant([seed, 0], tf.int64), start_step=2,
      colour_augmentation=True, decode_crop_only=decode_crop_only)
  return np.stack([b["image"] for b in batches.take(3).as_numpy_iterator()])


def test_decoding_only_the_crop_window_gives_the_same_crops():
  # Red and green ramps encode where a pixel comes from, so equal crops mean
  # equal boxes, flips and colour draws. A JPEG decodes only the window, a
  # PNG whole.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  height, width = 60, 80
  y, x = np.mgrid[:height, :width]
  ramps = np.stack([255 * (x + 0.5) / width, 255 * (y + 0.5) / height,
                    np.full((height, width), 128.0)], axis=-1)
  image = np.round(ramps).astype(np.uint8)
  encoded = [tf.io.encode_jpeg(image, quality=100).numpy(),
             tf.io.encode_png(image).numpy()]
  whole = _streamed_batches(encoded, decode_crop_only=False)
  window = _streamed_batches(encoded, decode_crop_only=True)
  assert window.shape == whole.shape == (3, 4, SIZE, SIZE, 3)
  # Whole pixels vs a bilinear resampling of a 2x copy: within a few levels.
  assert np.abs(window - whole).mean() < 0.005
  assert np.abs(window - whole).max() < 0.04
  other_seed = _streamed_batches(encoded, decode_crop_only=True, seed=1)
  assert np.abs(other_seed - whole).mean() > 0.05


# Windows resampled bilinearly, and antialiased.
@pytest.mark.parametrize("width", [2 * SIZE, 5 * SIZE])
def test_resize_crop_resamples_a_ramp_and_flips(width):
  ramp = np.broadcast_to(255 * (np.arange(width) + 0.5) / width,
                         (SIZE + 3, width))
  window = np.stack([ramp] * 3, axis=-1).astype(np.float32)
  image = preprocessing.resize_crop(window, SIZE, False).numpy()
  assert image.shape == (SIZE, SIZE, 3)
  expected = (np.arange(SIZE) + 0.5) / SIZE
  np.testing.assert_allclose(
      image, np.broadcast_to(expected[None, :, None], image.shape), atol=0.02)
  flipped = preprocessing.resize_crop(window, SIZE, True).numpy()
  np.testing.assert_array_equal(flipped, image[:, ::-1])


@pytest.mark.parametrize("height, width", [(1, 1), (3, 2), (40, 7)])
def test_random_crop_windows_lie_inside_the_image(height, width):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  for draw in itertools.product((0.0, 0.5, 0.999999), repeat=4):
    top, left, crop_height, crop_width = preprocessing.random_crop_window(
        height, width, tf.constant(draw, tf.float32)).numpy()
    assert 0 <= top and top + crop_height <= height and crop_height >= 1
    assert 0 <= left and left + crop_width <= width and crop_width >= 1


def test_colour_augmentation_permutes_and_scales_the_same_crops(photo_folder):
  plain, coloured = (
      np.stack(_train_batches(photo_folder[0], 3, global_batch_size=16,
                              colour_augmentation=augment)).reshape(
                                  -1, SIZE * SIZE, 3)
      for augment in (False, True))
  fits = [_permutation_and_gains(p, c) for p, c in zip(plain, coloured)]
  assert all(fit is not None for fit in fits)
  gains = np.concatenate([g for _, g in fits])
  gains = gains[~np.isnan(gains)]
  assert gains.std() > 0.1  # Gains vary: not a fixed scaling.
  assert len({p for p, _ in fits}) > 2  # Several channel orders occur.


# ---------------------------------------------------------------- evaluation ---


def test_embedded_eval_pads_and_masks_last_batch():
  batches = _eval_batches(data.EMBEDDED, global_batch_size=8)
  num_examples = 5 * len(data.EMBEDDED_VALIDATION_PHOTOS)  # 15
  assert len(batches) == 2
  for batch in batches:
    assert batch["image"].shape == (2, 4, SIZE, SIZE, 3)
    assert batch["image"].dtype == np.float32
    assert batch["mask"].shape == (2, 4) and batch["mask"].dtype == np.float32
  mask = np.concatenate([b["mask"].reshape(-1) for b in batches])
  np.testing.assert_array_equal(mask, [1] * num_examples + [0])
  assert np.all(batches[-1]["image"].reshape(-1, SIZE, SIZE, 3)[-1] == 0)
  real = _masked_images(batches)
  assert 0.0 <= real.min() and real.max() <= 1.0 and real.std() > 0.01
  np.testing.assert_array_equal(
      real, _masked_images(_eval_batches(data.EMBEDDED, global_batch_size=8)))
  assert len(_eval_batches(data.EMBEDDED, global_batch_size=2,
                           max_examples=3)) == 2


@pytest.mark.parametrize("source", ["embedded", "folder", "directory"])
def test_eval_processes_get_disjoint_shares_indexed_in_the_split(
    source, photo_folder):
  """Every image keeps its index in the split whatever the layout, so
  per-example randomness keyed by it does not depend on the layout."""
  if source == "directory":
    batches = lambda **layout: list(data.create_directory_eval_iterator(
        photo_folder[0], image_size=SIZE, global_batch_size=4, **layout))
  else:
    dataset = data.EMBEDDED if source == "embedded" else photo_folder[0]
    batches = lambda **layout: _eval_batches(
        dataset, global_batch_size=4, max_examples=5, **layout)
  everything = batches(process_index=0, process_count=1, local_device_count=2)
  indices = _masked_images(everything, "index")
  np.testing.assert_array_equal(indices, np.arange(len(indices)))
  by_index = dict(zip(indices, _masked_images(everything)))
  shares = [batches(process_index=p, process_count=2, local_device_count=1)
            for p in range(2)]
  assert len(shares[0]) == len(shares[1])  # Equal batch counts.
  union = {}
  for share in shares:
    union.update(zip(_masked_images(share, "index"), _masked_images(share)))
  assert sorted(union) == sorted(by_index)
  for index, image in union.items():
    np.testing.assert_array_equal(image, by_index[index])


def test_folder_eval_is_the_held_out_file(photo_folder):
  directory, paths = photo_folder
  images = _masked_images(_eval_batches("folder:" + directory,
                                        global_batch_size=2))
  expected = preprocessing.center_crop_resize(
      sources.decode_image_file(paths[9]), SIZE).numpy()
  np.testing.assert_array_equal(images, expected[None])


@pytest.mark.parametrize("dataset", sorted(MOCK_DATASETS))
def test_tfds_eval(dataset, mock_tfds):
  batches = _eval_batches(dataset, global_batch_size=4, data_dir=mock_tfds)
  assert len(batches) == 2
  assert batches[0]["image"].shape == (2, 2, SIZE, SIZE, 3)
  np.testing.assert_array_equal(
      np.concatenate([b["mask"].reshape(-1) for b in batches]),
      [1] * NUM_MOCK_EXAMPLES + [0] * 2)
  images = _masked_images(batches)
  assert 0.0 <= images.min() and images.max() <= 1.0 and images.std() > 0.01
  np.testing.assert_array_equal(_masked_images(batches, "index"),
                                np.arange(NUM_MOCK_EXAMPLES))
  np.testing.assert_array_equal(
      images, _masked_images(_eval_batches(dataset, global_batch_size=4,
                                           data_dir=mock_tfds)))
  # The mock ignores slicing, so only the batch count shows max_examples.
  assert len(_eval_batches(dataset, global_batch_size=2, max_examples=2,
                           data_dir=mock_tfds)) == 1


def _directory_images(directory, image_size=SIZE, **kwargs):
  return _masked_images(list(data.create_directory_eval_iterator(
      directory, image_size=image_size, global_batch_size=4, **kwargs)))


def test_directory_eval(photo_folder):
  directory, paths = photo_folder
  images = _directory_images(directory)  # Top level only, in name order.
  top_level = [p for p in paths if os.path.dirname(p) == directory]
  assert images.shape == (len(top_level), SIZE, SIZE, 3)
  assert images.dtype == np.float32
  for image, path in zip(images, top_level):
    np.testing.assert_array_equal(image, preprocessing.center_crop_resize(
        sources.decode_image_file(path), SIZE).numpy())
  np.testing.assert_allclose(images[0, ..., 0], _colour(0)[0] / 255, atol=1e-6)


@pytest.mark.skipif(not os.path.isdir(KODAK_DIR), reason="no Kodak images")
def test_directory_eval_kodak():
  images = _directory_images(KODAK_DIR, 32)
  assert images.shape == (4, 32, 32, 3)
  assert 0.0 <= images.min() and images.max() <= 1.0 and images.std() > 0.05


def test_importing_the_pipeline_leaves_tensorflow_devices_alone():
  code = ("import tensorflow as tf; calls = []; "
          "tf.config.set_visible_devices = lambda *a: calls.append(a); "
          "import finola_jax.data; print(calls)")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                       text=True, cwd=helpers.REPO_ROOT, check=True)
  assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------ labeled ---


def test_digits_split():
  train = data.load_labeled_split(data.DIGITS, "train", image_size=SIZE)
  validation = data.load_labeled_split(data.DIGITS, "validation",
                                       image_size=SIZE)
  assert train.num_classes == validation.num_classes == 10
  assert train.num_examples + validation.num_examples == 1797
  assert 0.19 < validation.num_examples / 1797 < 0.21
  batches = list(validation.batches(100))
  assert [len(b["label"]) for b in batches] == [100] * 3 + [55]
  images = np.concatenate([b["image"] for b in batches])
  labels = np.concatenate([b["label"] for b in batches])
  assert images.shape == (validation.num_examples, SIZE, SIZE, 3)
  assert images.dtype == np.float32 and labels.dtype == np.int32
  assert 0.0 <= images.min() and images.max() <= 1.0
  np.testing.assert_array_equal(images[..., 0], images[..., 2])  # Grey RGB.
  assert np.bincount(labels).min() >= 30  # Stratified.
  again = next(validation.batches(100))
  np.testing.assert_array_equal(again["image"], batches[0]["image"])
  limited = data.load_labeled_split(data.DIGITS, "train", image_size=SIZE,
                                    max_examples=7)
  assert limited.num_examples == 7
  assert len(next(limited.batches(100))["label"]) == 7


def test_labeled_folder(labeled_folder):
  counts = {}
  for split in ("train", "validation"):
    labeled = data.load_labeled_split("folder:" + labeled_folder, split,
                                      image_size=SIZE)
    assert labeled.num_classes == 3
    batch = next(labeled.batches(100))
    assert len(batch["label"]) == labeled.num_examples
    for image, label in zip(batch["image"], batch["label"]):
      np.testing.assert_allclose(image[..., :2] * 255,
                                 np.broadcast_to(_colour(label), (SIZE, SIZE, 2)),
                                 atol=1e-3)
    counts[split] = np.bincount(batch["label"], minlength=3).tolist()
  # Position 4 of each class is held out; a one-image class keeps its image.
  assert counts == {"train": [5, 4, 1], "validation": [1, 1, 0]}


@pytest.mark.parametrize("dataset", sorted(MOCK_DATASETS))
def test_tfds_labeled_split(dataset, mock_tfds):
  labeled = data.load_labeled_split(dataset, "validation", image_size=SIZE,
                                    data_dir=mock_tfds)
  assert labeled.num_classes == {"cifar10": 10, "imagenet2012": 1000}[dataset]
  assert labeled.num_examples == NUM_MOCK_EXAMPLES
  batches = list(labeled.batches(4))
  assert [len(b["label"]) for b in batches] == [4, 2]
  assert batches[0]["image"].shape == (4, SIZE, SIZE, 3)
  assert batches[0]["image"].dtype == np.float32
  assert batches[0]["label"].dtype == np.int32
  labels = np.concatenate([b["label"] for b in batches])
  assert 0 <= labels.min() and labels.max() < labeled.num_classes
  np.testing.assert_array_equal(next(labeled.batches(4))["image"],
                                batches[0]["image"])
  limited = data.load_labeled_split(dataset, "train", image_size=SIZE,
                                    data_dir=mock_tfds, max_examples=2)
  assert limited.num_examples == 2


# ------------------------------------------------------------------- errors ---


def _train(dataset=data.EMBEDDED, **kwargs):
  kwargs = {"image_size": SIZE, "global_batch_size": 8, "seed": 0,
            "process_index": 0, "process_count": 1, "local_device_count": 1,
            **kwargs}
  return data.create_train_iterator(dataset, **kwargs)


def _eval(dataset=data.EMBEDDED, **kwargs):
  kwargs = {"image_size": SIZE, "global_batch_size": 8, "process_index": 0,
            "process_count": 1, "local_device_count": 1, **kwargs}
  return data.create_eval_iterator(dataset, **kwargs)


def _labeled(dataset=data.DIGITS, split="train", **kwargs):
  return data.load_labeled_split(dataset, split, **{"image_size": SIZE,
                                                    **kwargs})


def _directory(directory=None, **kwargs):
  return data.create_directory_eval_iterator(
      directory, **{"image_size": SIZE, "global_batch_size": 4, **kwargs})


@pytest.mark.parametrize("make, kwargs, message", [
    (_train, {"image_size": 0}, "image_size"),
    (_train, {"global_batch_size": 6, "process_count": 2,
              "local_device_count": 2}, "multiple"),
    (_train, {"global_batch_size": 0}, "multiple"),
    (_train, {"process_index": 2, "process_count": 2}, "process_index"),
    (_train, {"local_device_count": 0}, "local_device_count"),
    (_train, {"start_step": -1}, "start_step"),
    (_eval, {"image_size": 0}, "image_size"),
    (_eval, {"max_examples": 0}, "max_examples"),
    (_eval, {"global_batch_size": 3, "process_count": 2}, "multiple"),
    (_labeled, {"split": "test"}, "split"),
    (_labeled, {"image_size": 0}, "image_size"),
    (_labeled, {"max_examples": 0}, "max_examples"),
    (_labeled, {"dataset": data.EMBEDDED}, "no labels"),
    (_directory, {"directory": ".", "image_size": 0}, "image_size"),
])
def test_invalid_arguments(make, kwargs, message):
  with pytest.raises(ValueError, match=message):
    make(**kwargs)


@pytest.mark.parametrize("make", [_train, _eval, _labeled])
def test_unknown_dataset(make):
  with pytest.raises(sources.DatasetError, match="Unknown dataset 'no_such_dataset'"):
    make("no_such_dataset")


@pytest.mark.parametrize("make, prefix", [
    (_train, "folder:"), (_eval, "folder:"), (_labeled, "folder:"),
    (_directory, "")])
def test_folder_that_is_not_a_directory(make, prefix, tmp_path):
  with pytest.raises(sources.DatasetError, match="is not a directory"):
    make(f"{prefix}{tmp_path}/missing")


def test_tfds_without_validation_or_test_split():
  builder = types.SimpleNamespace(
      name="fake", info=types.SimpleNamespace(splits={"train": None}))
  with pytest.raises(sources.DatasetError, match="neither a 'validation' nor a 'test'"):
    sources.validation_split_name(builder)


def test_labeled_tfds_needs_image_and_class_label():
  builder = types.SimpleNamespace(
      info=types.SimpleNamespace(features={"image": None}))
  with mock.patch.object(sources, "tfds_builder", return_value=builder):
    with pytest.raises(sources.DatasetError, match="not an image classification"):
      _labeled("fake")


def test_folder_without_enough_images(tmp_path):
  for make, prefix in ((_train, "folder:"), (_directory, "")):
    with pytest.raises(sources.DatasetError, match="No image files"):
      make(f"{prefix}{tmp_path}")
  helpers.write_png(str(tmp_path / "only.png"), np.zeros((4, 4, 3), np.uint8))
  with pytest.raises(sources.DatasetError, match="at least two"):
    _train(f"folder:{tmp_path}")


def test_labeled_folder_needs_two_classes(tmp_path):
  helpers.write_png(str(tmp_path / "cat" / "0.png"), np.zeros((4, 4, 3), np.uint8))
  with pytest.raises(sources.DatasetError, match="at least two"):
    _labeled(f"folder:{tmp_path}")


def test_labeled_batches_needs_positive_batch_size():
  with pytest.raises(ValueError, match="batch_size"):
    _labeled(max_examples=4).batches(0)


# ------------------------------------------------------------------ sources ---


def test_each_kind_is_one_source_class(photo_folder, tmp_path):
  folder = photo_folder[0]
  assert isinstance(sources.from_name(data.EMBEDDED), sources.EmbeddedSource)
  assert isinstance(sources.from_name(data.DIGITS), sources.DigitsSource)
  for name in (f"folder:{folder}", folder):
    source = sources.from_name(name)
    assert isinstance(source, sources.FolderSource)
    assert source.dataset == f"folder:{folder}"
  assert isinstance(sources.from_name(f"idx:{tmp_path}"), sources.IdxSource)
  tfds_source = sources.from_name("cifar10:3.0.2", "/tfds")
  assert isinstance(tfds_source, sources.TfdsSource)
  assert (tfds_source.dataset, tfds_source.data_dir) == ("cifar10:3.0.2",
                                                         "/tfds")


def test_a_new_kind_is_one_class_the_pipelines_use():
  class ConstantSource(sources.Source):
    """Every training image is one grey level: "constant:LEVEL"."""
    prefix = "constant:"

    def __init__(self, level):
      self.level = float(level)

    @property
    def dataset(self):
      return f"constant:{self.level}"

    def train_batches(self, *, image_size, layout, **unused_kwargs):
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      image = tf.fill([layout.local_batch_size, image_size, image_size, 3],
                      self.level)
      return tf.data.Dataset.from_tensors({"image": image}).repeat()

    def eval_examples(self, **unused_kwargs):
      raise NotImplementedError

  try:
    [batch] = _train_batches("constant:0.25", num_steps=1,
                             local_device_count=2)
    assert batch.shape == (2, 4, SIZE, SIZE, 3)
    np.testing.assert_array_equal(batch, 0.25)
    with pytest.raises(sources.DatasetError, match="no labels"):
      _labeled("constant:0.5")
    with pytest.raises(TypeError, match="both claim 'constant:'"):
      type("Again", (ConstantSource,), {"prefix": "constant:"})
    type("Brighter", (ConstantSource,), {})  # Inherits, claims nothing.
  finally:
    del sources.Source._by_prefix["constant:"]  # pylint: disable=protected-access


def test_sources_and_recipe_import_without_tensorflow():
  # None in sys.modules makes any import of TensorFlow fail.
  code = """if True:
    import sys
    sys.modules["tensorflow"] = sys.modules["tensorflow_datasets"] = None
    import finola_jax.data
    from finola_jax.data import preprocessing, sources
    assert sources.embedded_photo("coins").shape == (303, 384, 3)
    print(len(sources.EMBEDDED_TRAIN_PHOTOS), preprocessing.CROP_AREA_RANGE,
          preprocessing.COLOUR_GAIN_RANGE,
          preprocessing.IN_MEMORY_STORED_SIZE_FACTOR,
          type(sources.from_name(sources.EMBEDDED)).__name__)
    try:
      preprocessing.check_image_size(8)
      preprocessing.resize(None, 1, 1)
    except ImportError as e:
      print("ImportError on use:", e)
  """
  out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                       text=True, cwd=helpers.REPO_ROOT)
  assert out.returncode == 0, out.stderr
  lines = out.stdout.splitlines()
  assert lines[0] == (f"{len(sources.EMBEDDED_TRAIN_PHOTOS)} "
                      f"{preprocessing.CROP_AREA_RANGE} "
                      f"{preprocessing.COLOUR_GAIN_RANGE} "
                      f"{preprocessing.IN_MEMORY_STORED_SIZE_FACTOR} "
                      "EmbeddedSource")
  assert lines[1].startswith("ImportError on use:") and "tensorflow" in lines[1]


def _write_truncated_jpeg(path):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  image = np.random.default_rng(0).integers(0, 256, (32, 40, 3), np.uint8)
  Image.fromarray(image).save(path, "JPEG")
  with open(path, "rb") as f:
    encoded = f.read()
  with open(path, "wb") as f:
    f.write(encoded[:len(encoded) // 2])


@pytest.fixture(scope="module")
def folder_with_bad_files(tmp_path_factory):
  """Twelve files: a truncated JPEG at sorted position 3 (training), a text
  file named like an image at position 9 (held out); PNGs elsewhere."""
  root = tmp_path_factory.mktemp("bad_files")
  for i in range(12):
    path = root / f"img{i:02d}.{'jpg' if i in (3, 9) else 'png'}"
    if i == 3:
      _write_truncated_jpeg(path)
    elif i == 9:
      path.write_text("not an image")
    else:
      helpers.write_png(str(path), np.full((20, 24, 3), 10 * i, np.uint8))
  return str(root)


def _warnings(caplog):
  return [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]


def test_undecodable_training_files_are_skipped_and_named(
    folder_with_bad_files, caplog):
  batches = _train_batches(f"folder:{folder_with_bad_files}", num_steps=3)
  assert all(np.isfinite(b).all() and b.shape == (1, 8, SIZE, SIZE, 3)
             for b in batches)
  warnings = _warnings(caplog)
  truncated = os.path.join(folder_with_bad_files, "img03.jpg")
  assert any(truncated in w and "Invalid JPEG data" in w for w in warnings)
  assert "Skipped 1 of 11 image files that cannot be decoded." in warnings
  assert not any("img09" in w for w in warnings)  # Held out: not decoded.


def test_undecodable_eval_files_are_skipped_and_named(
    folder_with_bad_files, caplog):
  # Every file of the directory is evaluated; the two bad ones are skipped
  # and the batches padded instead.
  batches = list(_directory(folder_with_bad_files, process_index=0,
                            process_count=1, local_device_count=2))
  assert sorted(_masked_images(batches, "index")) == [
      i for i in range(12) if i not in (3, 9)]
  warnings = _warnings(caplog)
  for name, reason in (("img03.jpg", "Invalid JPEG data"),
                       ("img09.jpg", "Unknown image file format")):
    assert any(os.path.join(folder_with_bad_files, name) in w and reason in w
               for w in warnings), (name, warnings)
  # The folder source's validation split is img09 alone: nothing is left.
  caplog.clear()
  batches = _eval_batches(f"folder:{folder_with_bad_files}",
                          global_batch_size=2)
  assert len(batches) == 1 and not batches[0]["mask"].any()
  assert any("img09.jpg" in w for w in _warnings(caplog))


def test_labeled_folder_skips_undecodable_files(tmp_path, caplog):
  for label in range(2):
    for i in range(3):
      helpers.write_png(str(tmp_path / f"class{label}" / f"{i}.png"),
                        np.full((8, 8, 3), 100 * label, np.uint8))
  _write_truncated_jpeg(tmp_path / "class1" / "3.jpg")
  train, validation = (_labeled(f"folder:{tmp_path}", split)
                       for split in ("train", "validation"))
  assert train.num_examples + validation.num_examples == 6
  assert any(str(tmp_path / "class1" / "3.jpg") in w
             for w in _warnings(caplog))
