"""Tests of finola_jax/data/idx.py: the IDX reader, its errors and the splits.

Every file is written here, byte by byte, from the format's definition
(two zero bytes, a type code, the number of dimensions, big-endian uint32
dimensions, big-endian data), independently of the reader.
"""

import gzip
import os
import shutil
import struct
import tempfile

import numpy as np
from absl.testing import absltest
from absl.testing import parameterized

from finola_jax.data import idx

_TYPE_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09,
               np.dtype(np.int16): 0x0B, np.dtype(np.int32): 0x0C,
               np.dtype(np.float32): 0x0D, np.dtype(np.float64): 0x0E}


def idx_bytes(array: np.ndarray) -> bytes:
  header = struct.pack(">BBBB", 0, 0, _TYPE_CODES[array.dtype], array.ndim)
  header += struct.pack(f">{array.ndim}I", *array.shape)
  return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write(path: str, data: bytes, compress: bool = False) -> str:
  if compress:
    path += ".gz"
    data = gzip.compress(data)
  with open(path, "wb") as f:
    f.write(data)
  return path


def mnist_like(count: int, seed: int, size: int = 5):
  """uint8 images [count, size, size] whose first pixel is their index, labels."""
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (count, size, size), dtype=np.uint8)
  images[:, 0, 0] = np.arange(count) % 256
  return images, rng.integers(0, 10, count).astype(np.uint8)


def write_split(directory: str, split: str, images, labels,
                compress: bool = True) -> None:
  write(os.path.join(directory, f"{split}-{idx.IMAGES}"), idx_bytes(images),
        compress)
  if labels is not None:
    write(os.path.join(directory, f"{split}-{idx.LABELS}"), idx_bytes(labels),
          compress)


class TempDirTestCase(parameterized.TestCase):
  """``new_dir()``: a fresh directory, removed after the test (under pytest
  too, where absltest's ``create_tempdir`` has no parsed flags)."""

  def new_dir(self) -> str:
    directory = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, directory)
    return directory


class ReadIdxTest(TempDirTestCase):

  @parameterized.product(dtype=list(_TYPE_CODES), compress=[False, True])
  def test_round_trip(self, dtype, compress):
    array = (np.arange(2 * 3 * 4) - 7).reshape(2, 3, 4).astype(dtype)
    if dtype == np.uint8:
      array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4) * 10
    path = write(os.path.join(self.new_dir(), "x"), idx_bytes(array),
                 compress)
    read = idx.read_idx(path)
    self.assertEqual(read.dtype, np.dtype(dtype))
    self.assertTrue(read.dtype.isnative)
    np.testing.assert_array_equal(read, array)

  def test_one_dimension_and_empty(self):
    directory = self.new_dir()
    np.testing.assert_array_equal(
        idx.read_idx(write(os.path.join(directory, "a"),
                           idx_bytes(np.array([3, 1, 4], np.uint8)))), [3, 1, 4])
    self.assertEqual(idx.read_idx(write(os.path.join(directory, "b"), idx_bytes(
        np.zeros((0, 28, 28), np.uint8)))).shape, (0, 28, 28))

  @parameterized.named_parameters(
      ("wrong_magic", b"\x08\x03" + bytes(14), "not an IDX file"),
      ("png", b"\x89PNG\r\n\x1a\n" + bytes(8), "not an IDX file"),
      ("empty", b"", "not an IDX file"),
      ("unknown_type", b"\x00\x00\x07\x01" + struct.pack(">I", 1) + b"\x00",
       "unknown IDX type code 0x07"),
      ("truncated_header", b"\x00\x00\x08\x03" + struct.pack(">I", 2),
       "truncated header"),
      ("truncated_data", idx_bytes(np.zeros((2, 3, 3), np.uint8))[:-1],
       "data truncated"),
      ("trailing_bytes", idx_bytes(np.zeros((2, 3, 3), np.uint8)) + b"\x00",
       "trailing bytes"),
  )
  def test_malformed_file(self, data, message):
    for compress in (False, True):
      path = write(os.path.join(self.new_dir(), "bad"), data, compress)
      with self.assertRaisesRegex(idx.IdxError, message):
        idx.read_idx(path)

  def test_truncated_gzip(self):
    data = gzip.compress(idx_bytes(np.zeros((4, 3, 3), np.uint8)))
    path = write(os.path.join(self.new_dir(), "bad.gz"), data[:-10])
    with self.assertRaisesRegex(idx.IdxError, "corrupt or truncated gzip"):
      idx.read_idx(path)


class LoadTest(TempDirTestCase):

  def test_holdout_split_without_t10k(self):
    directory = self.new_dir()
    images, labels = mnist_like(20, seed=0)
    write_split(directory, idx.TRAIN, images, labels)
    data = idx.load(directory)
    held_out = [5, 11, 17]
    kept = [i for i in range(20) if i not in held_out]
    self.assertEqual(data.eval_split, "holdout")
    np.testing.assert_array_equal(data.eval_images, images[held_out])
    np.testing.assert_array_equal(data.eval_labels, labels[held_out])
    np.testing.assert_array_equal(data.train_images, images[kept])
    np.testing.assert_array_equal(data.train_labels, labels[kept])
    self.assertEqual(data.train_labels.dtype, np.int32)
    self.assertEqual(data.num_classes, 1 + labels.max())

  def test_development_split_comes_from_the_training_part_only(self):
    directory = self.new_dir()
    images, labels = mnist_like(60, seed=1)
    write_split(directory, idx.TRAIN, images, labels)
    full = idx.load(directory)
    dev = idx.load(directory, development=True)
    self.assertEqual(dev.eval_split, "development")
    self.assertEqual((len(dev.train_images), len(dev.eval_images)), (40, 10))
    np.testing.assert_array_equal(dev.eval_images, full.train_images[4::5])
    firsts = lambda x: set(x[:, 0, 0].tolist())
    self.assertEmpty(firsts(dev.eval_images) & firsts(dev.train_images))
    self.assertEmpty(firsts(full.eval_images) &
                     (firsts(dev.eval_images) | firsts(dev.train_images)))

  @parameterized.parameters(False, True)
  def test_t10k_is_the_evaluation_split(self, compress):
    directory = self.new_dir()
    train = mnist_like(12, seed=2)
    test = mnist_like(4, seed=3)
    write_split(directory, idx.TRAIN, *train, compress=compress)
    write_split(directory, idx.TEST, *test, compress=compress)
    data = idx.load(directory)
    self.assertEqual(data.eval_split, "t10k")
    np.testing.assert_array_equal(data.train_images, train[0])
    np.testing.assert_array_equal(data.train_labels, train[1])
    np.testing.assert_array_equal(data.eval_images, test[0])
    np.testing.assert_array_equal(data.eval_labels, test[1])

  def test_images_only(self):
    directory = self.new_dir()
    images, _ = mnist_like(12, seed=4)
    write_split(directory, idx.TRAIN, images, None)
    data = idx.load(directory, with_labels=False)
    self.assertIsNone(data.train_labels)
    self.assertIsNone(data.eval_labels)
    self.assertLen(data.train_images, 10)
    with self.assertRaisesRegex(idx.IdxError, "no train-labels-idx1-ubyte"):
      idx.load(directory)

  def test_uncompressed_file_preferred(self):
    directory = self.new_dir()
    images, labels = mnist_like(12, seed=5)
    write_split(directory, idx.TRAIN, images, labels, compress=False)
    write_split(directory, idx.TRAIN, images[::-1].copy(), labels,
                compress=True)
    self.assertEqual(idx.find_file(directory, idx.TRAIN, idx.IMAGES),
                     os.path.join(directory, f"train-{idx.IMAGES}"))
    np.testing.assert_array_equal(idx.load(directory).eval_images,
                                  images[[5, 11]])

  def test_missing_files(self):
    directory = self.new_dir()
    with self.assertRaisesRegex(idx.IdxError, "not a directory"):
      idx.load(os.path.join(directory, "nowhere"))
    with self.assertRaisesRegex(idx.IdxError, "no train-images-idx3-ubyte"):
      idx.load(directory)
    images, labels = mnist_like(12, seed=6)
    write_split(directory, idx.TRAIN, images, labels)
    write_split(directory, idx.TEST, images, None)
    with self.assertRaisesRegex(idx.IdxError, "no t10k-labels-idx1-ubyte"):
      idx.load(directory)

  @parameterized.named_parameters(
      ("label_count", lambda im, lb: (im, lb[:-1]), "11 labels but .* 12 images"),
      ("labels_2d", lambda im, lb: (im, lb.reshape(3, 4)), r"labels \[N\]"),
      ("images_2d", lambda im, lb: (im.reshape(12, -1), lb), r"images \[N, H, W\]"),
      ("float_images", lambda im, lb: (im.astype(np.float32), lb),
       r"uint8 images"),
  )
  def test_inconsistent_files(self, change, message):
    directory = self.new_dir()
    write_split(directory, idx.TRAIN, *change(*mnist_like(12, seed=7)))
    with self.assertRaisesRegex(idx.IdxError, message):
      idx.load(directory)

  def test_test_images_of_another_size(self):
    directory = self.new_dir()
    write_split(directory, idx.TRAIN, *mnist_like(12, seed=8, size=5))
    write_split(directory, idx.TEST, *mnist_like(3, seed=9, size=6))
    with self.assertRaisesRegex(idx.IdxError, r"\(5, 5\).*\(6, 6\)"):
      idx.load(directory)

  def test_too_few_images_for_a_holdout(self):
    directory = self.new_dir()
    write_split(directory, idx.TRAIN, *mnist_like(5, seed=10))
    with self.assertRaisesRegex(idx.IdxError, "0 evaluation images"):
      idx.load(directory)


class ToModelImagesTest(absltest.TestCase):

  def test_pad_centres_on_black(self):
    images = np.full((2, 28, 28), 255, np.uint8)
    images[1, 0, 0] = 51
    out = idx.to_model_images(images, 32)
    self.assertEqual(out.shape, (2, 32, 32, 3))
    self.assertEqual(out.dtype, np.float32)
    np.testing.assert_array_equal(out[..., 0], out[..., 2])
    np.testing.assert_array_equal(out[:, 2:30, 2:30, 1][0], 1.0)
    self.assertEqual(out.sum(), 3 * (2 * 28 * 28 - 1 + 0.2))
    self.assertAlmostEqual(float(out[1, 2, 2, 0]), 0.2)

  def test_pad_odd_margin_goes_bottom_right(self):
    out = idx.to_model_images(np.full((1, 2, 2), 255, np.uint8), 5)
    np.testing.assert_array_equal(out[0, :, :, 0], np.pad(np.ones((2, 2)),
                                                          ((1, 2), (1, 2))))

  def test_resize(self):
    images = np.full((3, 28, 28), 102, np.uint8)
    for size in (14, 56):
      out = idx.to_model_images(images, size, fit="resize")
      self.assertEqual(out.shape, (3, size, size, 3))
      np.testing.assert_allclose(out, 0.4, atol=1e-6)

  def test_errors(self):
    images = np.zeros((1, 28, 28), np.uint8)
    with self.assertRaisesRegex(ValueError, "use fit='resize'"):
      idx.to_model_images(images, 16)
    with self.assertRaisesRegex(ValueError, "fit must be one of"):
      idx.to_model_images(images, 32, fit="crop")
    with self.assertRaisesRegex(ValueError, "image_size must be >= 1"):
      idx.to_model_images(images, 0, fit="resize")


if __name__ == "__main__":
  absltest.main()
