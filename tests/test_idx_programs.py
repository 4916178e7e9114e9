"""IDX datasets ("idx:DIR") in the pipelines and the programs, in this process.

Every IDX directory is written here (tiny, 12×12 or 20×20 images); only
`test_fashion_mnist_directory` reads ../shared/data/fashion_mnist, and it
is skipped when that directory is absent.
"""

import json
import os

import numpy as np
import pytest
from absl import app

from experiments import linear_probe
from experiments import pretrain_masked
from finola_jax.data import idx
from finola_jax.data import input_pipeline
from finola_jax.data import labeled
from finola_jax.data import sources
from finola_jax.train import run_config
from tests import helpers
from tests import test_idx

FASHION_MNIST = os.path.join(helpers.REPO_ROOT, "..", "shared", "data",
                             "fashion_mnist")
NUM_TRAIN_FILE = 60  # train-*: 50 trained on, 10 held out
FAST_PROBE = ["--config.steps=20", "--config.batch_size=8",
              "--config.warmup_steps=2", "--config.grid=2"]


def write_labeled_idx(directory: str, size: int = 12) -> str:
  """train-* of `NUM_TRAIN_FILE` images, two classes: dark and light."""
  rng = np.random.default_rng(0)
  labels = rng.permutation(np.arange(NUM_TRAIN_FILE) % 2).astype(np.uint8)
  images = (rng.integers(0, 60, (NUM_TRAIN_FILE, size, size))
            + 190 * labels[:, None, None]).astype(np.uint8)
  test_idx.write_split(directory, "train", images, labels)
  return directory


@pytest.fixture(scope="module")
def idx_dir(tmp_path_factory):
  return write_labeled_idx(str(tmp_path_factory.mktemp("idx")))


@pytest.fixture(scope="module")
def pretrained_workdir(tmp_path_factory, idx_dir):
  """A tiny masked pre-training on the IDX directory, through the program."""
  workdir = str(tmp_path_factory.mktemp("pretrained"))
  config = helpers.tiny_config("pretrain_masked", dataset=f"idx:{idx_dir}",
                               colour_augmentation=False)
  pretrain_masked.train_and_evaluate(config, workdir)
  return workdir


def test_training_batches_are_flipped_grey_training_images(idx_dir):
  batches = input_pipeline.create_train_iterator(
      f"idx:{idx_dir}", image_size=16, global_batch_size=8, seed=3,
      process_index=0, process_count=1, local_device_count=1)
  image = next(batches)["image"]
  assert image.shape == (1, 8, 16, 16, 3) and image.dtype == np.float32
  np.testing.assert_array_equal(image[..., 0], image[..., 2])  # Grey.
  # Padded 12 → 16 on black, and every image is (maybe flipped) a training one.
  assert np.all(image[:, :, :2] == 0) and np.all(image[:, :, :, -2:] == 0)
  train = idx.to_model_images(
      idx.load(idx_dir, with_labels=False).train_images, 16)
  flipped = train[:, :, ::-1]
  for example in image[0]:
    assert np.any(np.all(example == train, axis=(1, 2, 3))
                  | np.all(example == flipped, axis=(1, 2, 3)))
  again = input_pipeline.create_train_iterator(
      f"idx:{idx_dir}", image_size=16, global_batch_size=8, seed=3,
      process_index=0, process_count=1, local_device_count=1)
  np.testing.assert_array_equal(next(again)["image"], image)


def test_evaluation_batches_are_the_held_out_images(idx_dir):
  batches = list(input_pipeline.create_eval_iterator(
      f"idx:{idx_dir}", image_size=16, global_batch_size=4, process_index=0,
      process_count=1, local_device_count=1))
  index = np.concatenate([b["index"].ravel() for b in batches])
  mask = np.concatenate([b["mask"].ravel() for b in batches])
  assert mask.sum() == NUM_TRAIN_FILE // idx.HOLDOUT_EVERY
  held_out = idx.to_model_images(idx.load(idx_dir).eval_images, 16)
  images = np.concatenate([b["image"].reshape(-1, 16, 16, 3) for b in batches])
  np.testing.assert_array_equal(images[mask == 1], held_out[index[mask == 1]])


def test_labeled_arrays_resize_images_that_do_not_fit(tmp_path):
  data = labeled.load_labeled_arrays(
      f"idx:{write_labeled_idx(str(tmp_path), size=20)}", image_size=16)
  assert data.train_inputs.shape == (50, 20, 20)  # Stored as read.
  assert data.eval_split == "holdout" and data.num_classes == 2
  assert data.prepare(data.eval_inputs[:3]).shape == (3, 16, 16, 3)
  with pytest.raises(ValueError, match="use load_labeled_arrays"):
    labeled.load_labeled_split(f"idx:{tmp_path}", "train", image_size=16)


# tran1 through the program adds nothing over these two (its head is tested in
# test_probe_protocols.py); finetune also runs `prepare` inside training.
@pytest.mark.parametrize("protocol", ["linear", "finetune"])
def test_probe_program_on_idx(pretrained_workdir, idx_dir, tmp_path, protocol):
  workdir = tmp_path / "probe"
  stdout = helpers.run_program(linear_probe, [
      f"--workdir={workdir}", f"--pretrained_workdir={pretrained_workdir}",
      f"--config.dataset=idx:{idx_dir}", f"--config.protocol={protocol}",
      *FAST_PROBE])
  probe = json.loads((workdir / "probe.json").read_text())
  assert probe["protocol"] == protocol and probe["eval_split"] == "holdout"
  assert (probe["num_train"], probe["num_eval"]) == (50, 10)
  assert probe["encoder"] == f"step {helpers.STEPS}"
  assert probe["top1"] == 1.0  # Dark and light: any encoder tells them apart.
  assert f"top-1 {probe['top1']:.4f} on holdout" in stdout
  assert run_config.read(str(workdir)).protocol == protocol


def test_raw_pixels_need_no_pretraining(idx_dir, tmp_path):
  workdir = tmp_path / "probe"
  helpers.run_program(linear_probe, [
      f"--workdir={workdir}", f"--config.dataset=idx:{idx_dir}",
      "--config.raw_pixels=True", "--config.image_size=16", *FAST_PROBE])
  probe = json.loads((workdir / "probe.json").read_text())
  assert probe["encoder"] == "raw_pixels" and probe["top1"] == 1.0
  assert probe["pretrained_workdir"] is None


@pytest.mark.parametrize("damage, message", [
    (lambda path: os.remove(path), "no train-labels"),
    (lambda path: open(path, "wb").write(b"\x1f\x8b garbage"), "corrupt"),
])
def test_bad_idx_files_stop_the_programs_before_they_write(
    idx_dir, pretrained_workdir, tmp_path, damage, message):
  bad = tmp_path / "bad"
  bad.mkdir()
  for name in os.listdir(idx_dir):
    (bad / name).write_bytes(open(os.path.join(idx_dir, name), "rb").read())
  damage(str(bad / f"train-{idx.LABELS}.gz"))
  with pytest.raises(app.UsageError, match=f"config.dataset.*{message}"):
    helpers.run_program(linear_probe, [
        f"--workdir={tmp_path / 'probe'}",
        f"--pretrained_workdir={pretrained_workdir}",
        f"--config.dataset=idx:{bad}", *FAST_PROBE])
  assert not (tmp_path / "probe").exists()
  os.remove(bad / f"train-{idx.IMAGES}.gz")
  with pytest.raises(sources.DatasetError, match="no train-images"):
    pretrain_masked.train_and_evaluate(
        helpers.tiny_config("pretrain_masked", dataset=f"idx:{bad}"),
        str(tmp_path / "pretrain"))
  assert not (tmp_path / "pretrain").exists()


@pytest.mark.skipif(not os.path.isdir(FASHION_MNIST),
                    reason=f"Fashion-MNIST is not in {FASHION_MNIST}")
def test_fashion_mnist_directory():
  data = idx.load(FASHION_MNIST)
  assert data.eval_split == "holdout"
  assert (len(data.train_labels), len(data.eval_labels)) == (50_000, 10_000)
  assert data.train_images.shape[1:] == (28, 28) and data.num_classes == 10
