"""Tests of the search data pipeline (dslnas.search.data): datasets, splits, device batches."""
from __future__ import annotations

import copy
import hashlib
import pickle
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import attrs
import numpy as np
import pytest

from conftest import SHARED
import torch

from dslnas.search import datasets as ds_mod
from dslnas.search.data import (
    CIFAR_SOURCES,
    NORMS,
    DataError,
    Dataset,
    DeviceBatches,
    EvalBatches,
    SearchData,
    eval_batches,
    load_dataset,
    split_indices,
)

JPEG_NPZ = SHARED / "data/cifar10-jpeg.npz"
JPEG_TOOL = SHARED / "tools/cifar10_from_jpeg.py"


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """No test may touch the network: any attempt fails loudly."""

    def refuse(*a, **k):
        raise AssertionError("test tried to use the network")

    monkeypatch.setattr("urllib.request.urlopen", refuse)


# ------------------------------------------------------------------------------------------
# fake CIFAR folders
# ------------------------------------------------------------------------------------------
def _rows(img_hwc: np.ndarray) -> np.ndarray:
    """CIFAR row format: 3072 bytes = R plane, G plane, B plane (each 32x32 row-major)."""
    return img_hwc.transpose(0, 3, 1, 2).reshape(len(img_hwc), 3072)


def _dump(path: Path, data: np.ndarray, label_key: str, labels, str_keys: bool) -> None:
    d = {"data": data, label_key: list(labels), "batch_label": "fake"}
    if not str_keys:
        d = {k.encode(): v for k, v in d.items()}
    with open(path, "wb") as f:
        pickle.dump(d, f)


def make_fake_cifar10(root: Path, per_batch: int = 4, n_test: int = 3, str_keys: bool = False, seed=0):
    """Writes root/cifar-10-batches-py; returns (train images NHWC, labels, test images, labels)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    n = 5 * per_batch
    train = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, n)
    for b in range(5):
        sl = slice(b * per_batch, (b + 1) * per_batch)
        _dump(folder / f"data_batch_{b + 1}", _rows(train[sl]), "labels", labels[sl], str_keys)
    test = rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8)
    test_labels = rng.integers(0, 10, n_test)
    _dump(folder / "test_batch", _rows(test), "labels", test_labels, str_keys)
    return train, labels, test, test_labels


def make_fake_cifar100(root: Path, n: int = 6, n_test: int = 2, seed=1):
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    train = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 100, n)
    test = rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8)
    test_labels = rng.integers(0, 100, n_test)
    _dump(folder / "train", _rows(train), "fine_labels", labels, False)
    _dump(folder / "test", _rows(test), "fine_labels", test_labels, False)
    return train, labels, test, test_labels


def make_fake_svhn(root: Path, monkeypatch=None, n: int = 7, n_test: int = 3, seed=2):
    """Writes root/train_32x32.mat and test_32x32.mat as the official files lay them out:
    X (32, 32, 3, N) uint8, y (N, 1) with the digit 0 labelled 10; with ``monkeypatch``, makes
    their md5s the expected ones. Returns the NHWC images and labels 1..10 of both splits."""
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    out = []
    for name, k in (("train_32x32.mat", n), ("test_32x32.mat", n_test)):
        img = rng.integers(0, 256, (k, 32, 32, 3), dtype=np.uint8)
        y = np.concatenate([[10, 1], rng.integers(1, 11, k - 2)]).astype(np.uint8)
        savemat(root / name, {"X": img.transpose(1, 2, 3, 0), "y": y[:, None]})
        out += [img, y]
        if monkeypatch is not None:
            split = "train" if name.startswith("train") else "test"
            md5 = hashlib.md5((root / name).read_bytes()).hexdigest()
            monkeypatch.setitem(ds_mod.SVHN_FILES, split, (name, md5))
    return out


def make_tarball(src_root: Path, folder: str, dest: Path) -> str:
    with tarfile.open(dest, "w:gz") as tar:
        tar.add(src_root / folder, arcname=folder)
    return hashlib.md5(dest.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------------
# loading
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("str_keys", [False, True])
def test_cifar10_loads_fake_folder(tmp_path, str_keys):
    train, labels, test, test_labels = make_fake_cifar10(tmp_path, str_keys=str_keys)
    ds = load_dataset("cifar10", tmp_path, download=False)
    assert ds.name == "cifar10" and ds.num_classes == 10
    assert ds.train_x.shape == (20, 3, 32, 32) and ds.train_x.dtype == torch.uint8
    assert ds.test_x.shape == (3, 3, 32, 32) and ds.test_x.dtype == torch.uint8
    assert ds.train_y.dtype == torch.int64 and ds.test_y.dtype == torch.int64
    # label order: data_batch_1..5 concatenated
    assert ds.train_y.tolist() == labels.tolist()
    assert ds.test_y.tolist() == test_labels.tolist()
    # channel layout: NCHW with channel 0 = R (first 1024 bytes of a row)
    assert np.array_equal(ds.train_x.numpy(), train.transpose(0, 3, 1, 2))
    assert np.array_equal(ds.test_x.numpy(), test.transpose(0, 3, 1, 2))
    row = _rows(train[:1])[0]
    for c in range(3):
        assert np.array_equal(ds.train_x[0, c].flatten().numpy(), row[c * 1024 : (c + 1) * 1024])
    assert ds.in_channels == 3 and ds.image_size == 32
    assert ds.mean == NORMS["cifar10"]["darts"][0] and ds.std == NORMS["cifar10"]["darts"][1]


def test_norm_constants(tmp_path):
    make_fake_cifar10(tmp_path)
    darts = load_dataset("cifar10", tmp_path, download=False)
    nb201 = load_dataset("cifar10", tmp_path, norm="nb201", download=False)
    assert darts.mean == pytest.approx((0.49139968, 0.48215827, 0.44653124))
    assert darts.std == pytest.approx((0.24703233, 0.24348505, 0.26158768))
    assert nb201.mean == pytest.approx((125.3 / 255, 123.0 / 255, 113.9 / 255))
    assert nb201.std == pytest.approx((63.0 / 255, 62.1 / 255, 66.7 / 255))
    assert NORMS["cifar100"]["darts"][0] == pytest.approx((0.5071, 0.4865, 0.4409))
    assert NORMS["cifar100"]["nb201"][1] == pytest.approx((68.2 / 255, 65.4 / 255, 70.4 / 255))
    with pytest.raises(DataError, match="normalisation"):
        load_dataset("cifar10", tmp_path, norm="imagenet", download=False)


def test_cifar100_loads_fake_folder(tmp_path):
    train, labels, test, test_labels = make_fake_cifar100(tmp_path)
    ds = load_dataset("cifar100", tmp_path, download=False)
    assert ds.num_classes == 100
    assert ds.train_x.shape == (6, 3, 32, 32) and ds.test_x.shape == (2, 3, 32, 32)
    assert ds.train_y.tolist() == labels.tolist() and ds.test_y.tolist() == test_labels.tolist()
    assert np.array_equal(ds.train_x.numpy(), train.transpose(0, 3, 1, 2))
    assert ds.mean == pytest.approx((0.5071, 0.4865, 0.4409))


def test_svhn_loads_the_official_mat_layout(tmp_path, monkeypatch):
    train, labels, test, test_labels = make_fake_svhn(tmp_path, monkeypatch)
    ds = load_dataset("svhn", tmp_path, download=False)
    assert ds.name == "svhn" and ds.num_classes == 10 and ds.in_channels == 3
    assert ds.train_x.shape == (7, 3, 32, 32) and ds.train_x.dtype == torch.uint8
    assert ds.test_x.shape == (3, 3, 32, 32) and ds.train_y.dtype == torch.int64
    # NCHW with channel 0 = R; the files' label 10 is the digit 0
    assert np.array_equal(ds.train_x.numpy(), train.transpose(0, 3, 1, 2))
    assert np.array_equal(ds.test_x.numpy(), test.transpose(0, 3, 1, 2))
    assert ds.train_y.tolist() == [0 if v == 10 else int(v) for v in labels]
    assert ds.train_y[0] == 0 and ds.train_y[1] == 1
    assert ds.test_y.tolist() == [0 if v == 10 else int(v) for v in test_labels]
    assert ds.mean == pytest.approx((0.4377, 0.4438, 0.4728))     # R-DARTS' constants
    assert ds.std == pytest.approx((0.1980, 0.2010, 0.1970))
    assert load_dataset("SVHN", tmp_path, norm="nb201", download=False).mean == ds.mean


def test_svhn_missing_foreign_corrupt_and_downloaded(tmp_path, monkeypatch):
    monkeypatch.setattr(ds_mod, "_download", lambda *a, **k: pytest.fail("downloaded"))
    with pytest.raises(DataError, match="no file .*train_32x32.mat") as e:
        load_dataset("svhn", tmp_path / "none", download=False)
    assert "test_32x32.mat" in str(e.value) and "ufldl.stanford.edu" in str(e.value)

    good, bad = tmp_path / "good", tmp_path / "bad"
    make_fake_svhn(good, monkeypatch)               # their md5s are now the expected ones
    shutil.copytree(good, bad)
    (bad / "test_32x32.mat").write_bytes(b"MATLAB 5.0 truncated")
    with pytest.raises(DataError, match="test_32x32.mat is not the official SVHN file"):
        load_dataset("svhn", bad, download=False)
    assert (bad / "test_32x32.mat").is_file()       # a user's file is never deleted
    md5 = hashlib.md5(b"MATLAB 5.0 truncated").hexdigest()
    monkeypatch.setitem(ds_mod.SVHN_FILES, "test", ("test_32x32.mat", md5))
    with pytest.raises(DataError, match="test_32x32.mat is corrupt"):
        load_dataset("svhn", bad, download=False)

    # a missing file is fetched from the official address; a corrupt download is deleted
    calls = []

    def fetch(url, dest, timeout=None):
        calls.append(url)
        shutil.copy(good / dest.name, dest)

    monkeypatch.setattr(ds_mod, "_download", fetch)
    (bad / "test_32x32.mat").unlink()
    with pytest.raises(DataError, match="download of .* is corrupt"):
        load_dataset("svhn", bad)
    assert not (bad / "test_32x32.mat").exists()
    md5 = hashlib.md5((good / "test_32x32.mat").read_bytes()).hexdigest()
    monkeypatch.setitem(ds_mod.SVHN_FILES, "test", ("test_32x32.mat", md5))
    assert load_dataset("svhn", bad).test_x.shape == (3, 3, 32, 32)
    assert calls == ["http://ufldl.stanford.edu/housenumbers/test_32x32.mat"] * 2


def test_unknown_dataset_is_data_error():
    with pytest.raises(DataError, match="cifar10"):
        load_dataset("mnist", "/nonexistent")


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_missing_folder_download_fails_is_data_error(tmp_path, monkeypatch, name):
    calls = []

    def fail(url, dest, timeout=None):
        calls.append(url)
        raise OSError("network unreachable")

    monkeypatch.setattr(ds_mod, "_download", fail)
    src = CIFAR_SOURCES[name]
    with pytest.raises(DataError) as e:
        load_dataset(name, tmp_path)
    msg = str(e.value)
    assert calls == [src.url] and "cs.toronto.edu/~kriz" in src.url
    assert src.folder in msg and src.tarball in msg and str(tmp_path) in msg
    assert "network unreachable" in msg


def test_missing_folder_no_download(tmp_path, monkeypatch):
    monkeypatch.setattr(ds_mod, "_download", lambda *a, **k: pytest.fail("downloaded"))
    with pytest.raises(DataError, match="cifar-10-batches-py") as e:
        load_dataset("cifar10", tmp_path / "nothing_here", download=False)
    assert "cifar-10-python.tar.gz" in str(e.value)


def test_md5_mismatch_is_data_error(tmp_path, monkeypatch):
    monkeypatch.setattr(ds_mod, "_download", lambda *a, **k: pytest.fail("downloaded"))
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"not really a tarball")
    with pytest.raises(DataError, match="md5") as e:
        load_dataset("cifar10", tmp_path)
    assert "cifar-10-python.tar.gz" in str(e.value)
    assert not (tmp_path / "cifar-10-batches-py").exists()


def test_tarball_in_root_is_verified_and_extracted(tmp_path, monkeypatch):
    make_fake_cifar10(tmp_path / "src")
    md5 = make_tarball(tmp_path / "src", "cifar-10-batches-py", tmp_path / "cifar-10-python.tar.gz")
    monkeypatch.setitem(CIFAR_SOURCES, "cifar10", attrs.evolve(CIFAR_SOURCES["cifar10"], md5=md5))
    monkeypatch.setattr(ds_mod, "_download", lambda *a, **k: pytest.fail("downloaded"))
    ds = load_dataset("cifar10", tmp_path)
    assert (tmp_path / "cifar-10-batches-py" / "data_batch_5").is_file()
    assert ds.train_x.shape == (20, 3, 32, 32)


def test_download_then_extract(tmp_path, monkeypatch):
    make_fake_cifar100(tmp_path / "src")
    tb = tmp_path / "src" / "cifar-100-python.tar.gz"
    md5 = make_tarball(tmp_path / "src", "cifar-100-python", tb)
    monkeypatch.setitem(CIFAR_SOURCES, "cifar100", attrs.evolve(CIFAR_SOURCES["cifar100"], md5=md5))
    monkeypatch.setattr(ds_mod, "_download", lambda url, dest, timeout=None: shutil.copy(tb, dest))
    root = tmp_path / "data"
    ds = load_dataset("cifar100", root)
    assert ds.train_x.shape == (6, 3, 32, 32) and (root / "cifar-100-python.tar.gz").is_file()


def test_corrupt_pickle_is_data_error(tmp_path):
    make_fake_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"\x80\x04garbage")
    with pytest.raises(DataError, match="data_batch_3"):
        load_dataset("cifar10", tmp_path, download=False)


def test_missing_batch_file_is_data_error(tmp_path):
    make_fake_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(DataError, match="test_batch"):
        load_dataset("cifar10", tmp_path, download=False)


def test_digits():
    ds = load_dataset("digits")
    assert ds.name == "digits" and ds.num_classes == 10
    assert ds.train_x.shape == (1437, 3, 16, 16) and ds.test_x.shape == (360, 3, 16, 16)
    assert ds.train_x.dtype == torch.uint8 and ds.train_y.dtype == torch.int64
    assert len(ds.train_y) == 1437 and len(ds.test_y) == 360
    assert int(ds.train_x.max()) == 255 and int(ds.train_x.min()) == 0
    # channels replicated, nearest 2x upsampling (2x2 blocks constant)
    x = ds.train_x
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])
    assert torch.equal(x[:, :, ::2, ::2], x[:, :, 1::2, 1::2])
    assert torch.equal(x[:, :, ::2, ::2], x[:, :, ::2, 1::2])
    assert set(ds.train_y.tolist()) == set(range(10)) == set(ds.test_y.tolist())
    again = load_dataset("digits")
    assert torch.equal(again.train_x, ds.train_x) and torch.equal(again.test_y, ds.test_y)
    assert len(ds.mean) == 3 and 0 < ds.mean[0] < 1 and 0 < ds.std[0] < 1


# ------------------------------------------------------------------------------------------
# splits
# ------------------------------------------------------------------------------------------
def test_half_split():
    tr, va = split_indices(10, "half", seed=3)
    assert tr.tolist() == list(range(5)) and va.tolist() == list(range(5, 10))
    tr, va = split_indices(11, "half")
    assert tr.tolist() == list(range(5)) and va.tolist() == list(range(5, 11))
    assert tr.dtype == torch.int64


def test_random_split():
    n = 1001
    tr, va = split_indices(n, "random", seed=7)
    assert len(tr) == 500 and len(va) == 501
    assert set(tr.tolist()).isdisjoint(va.tolist())
    assert sorted(tr.tolist() + va.tolist()) == list(range(n))
    tr2, va2 = split_indices(n, "random", seed=7)
    assert torch.equal(tr, tr2) and torch.equal(va, va2)
    tr3, _ = split_indices(n, "random", seed=8)
    assert not torch.equal(tr, tr3)
    assert tr.tolist() != list(range(500))  # not the half split
    with pytest.raises(ValueError):
        split_indices(n, "thirds")


# ------------------------------------------------------------------------------------------
# device batches
# ------------------------------------------------------------------------------------------
RAW = dict(mean=(0.0, 0.0, 0.0), std=(1 / 255, 1 / 255, 1 / 255))  # output = raw pixel value


def _images(n, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)


def _match(out: torch.Tensor, orig: torch.Tensor, pad: int):
    """All (dy, dx, flipped) such that out is that window of the zero-padded original."""
    h, w = orig.shape[-2:]
    padded = torch.nn.functional.pad(orig.float(), (pad, pad, pad, pad))
    hits = []
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            win = padded[:, dy : dy + h, dx : dx + w]
            for flipped, cand in ((False, win), (True, win.flip(-1))):
                if torch.equal(cand, out):
                    hits.append((dy, dx, flipped))
    return hits


def test_crop_and_flip_are_windows_of_padded_original():
    x = _images(40)
    y = torch.arange(40)
    seen = set()
    for seed in range(3):
        stream = DeviceBatches(x, y, 16, seed=seed, **RAW)
        assert stream.pad == 2
        for xb, yb in stream:
            assert xb.shape[1:] == (3, 16, 16) and xb.dtype == torch.float32
            for out, label in zip(xb, yb.tolist()):
                hits = _match(out, x[label], 2)
                assert hits, "augmented image is not a shifted window of the padded original"
                seen.update(hits)
    # offsets span the whole padding range in both axes, and both flips occur
    assert {h[0] for h in seen} == set(range(5)) and {h[1] for h in seen} == set(range(5))
    assert {h[2] for h in seen} == {False, True}


def test_pad4_for_32px():
    x = _images(8, size=32)
    stream = DeviceBatches(x, torch.arange(8), 8, **RAW)
    assert stream.pad == 4
    xb, yb = stream.next()
    for out, label in zip(xb, yb.tolist()):
        assert _match(out, x[label], 4)


def test_flip_only_and_no_augmentation():
    x = _images(64)
    y = torch.arange(64)
    flips = set()
    for xb, yb in DeviceBatches(x, y, 64, crop=False, flip=True, **RAW):
        for out, label in zip(xb, yb.tolist()):
            o = x[label].float()
            assert torch.equal(out, o) or torch.equal(out, o.flip(-1))
            flips.add(torch.equal(out, o.flip(-1)))
    assert flips == {False, True}
    for xb, yb in DeviceBatches(x, y, 10, crop=False, flip=False, **RAW):
        assert torch.equal(xb, x[yb].float())


def test_every_sample_once_per_epoch_and_partial_batch_kept():
    n, bs = 53, 8
    stream = DeviceBatches(_images(n), torch.arange(n), bs, seed=1, **RAW)
    assert len(stream) == 7
    orders = []
    for epoch in range(3):
        batches = list(stream)
        assert len(batches) == 7 and [len(b[1]) for b in batches] == [8] * 6 + [5]
        order = torch.cat([b[1] for b in batches]).tolist()
        assert sorted(order) == list(range(n))
        orders.append(order)
        assert stream.epoch == epoch + 1
    assert orders[0] != orders[1] != orders[2]  # fresh permutation each epoch
    dropped = DeviceBatches(_images(n), torch.arange(n), bs, drop_last=True, **RAW)
    batches = list(dropped)
    assert len(dropped) == 6 == len(batches) and all(len(b[1]) == 8 for b in batches)


def test_next_cycles_across_epochs():
    n = 10
    stream = DeviceBatches(_images(n), torch.arange(n), 4, **RAW)
    labels = torch.cat([stream.next()[1] for _ in range(6)]).tolist()  # 2 epochs of 4+4+2
    assert sorted(labels[:10]) == list(range(10)) and sorted(labels[10:]) == list(range(10))
    assert stream.epoch == 2


@pytest.mark.parametrize("skip", [0, 3, 7, 9])
def test_state_dict_round_trip(tmp_path, skip):
    n = 50
    x, y = _images(n), torch.arange(n)
    a = DeviceBatches(x, y, 7, seed=5, **RAW)
    for _ in range(skip):  # 7 batches per epoch: covers start, middle, boundary, next epoch
        a.next()
    torch.save(a.state_dict(), tmp_path / "state.pt")
    expected = [a.next() for _ in range(10)]
    b = DeviceBatches(x, y, 7, seed=123, **RAW)  # different seed: the state must win
    b.load_state_dict(torch.load(tmp_path / "state.pt"))
    for (xe, ye), (xg, yg) in zip(expected, [b.next() for _ in range(10)]):
        assert torch.equal(xe, xg) and torch.equal(ye, yg)
    assert (a.epoch, a.pos) == (b.epoch, b.pos)
    with pytest.raises(ValueError):
        DeviceBatches(x[:40], y[:40], 7, **RAW).load_state_dict(a.state_dict())


def test_normalisation_channels_last_and_dtype():
    x = _images(6, size=32)
    mean, std = NORMS["cifar10"]["darts"]
    xb, yb = DeviceBatches(x, torch.arange(6), 6, mean=mean, std=std, crop=False, flip=False,
                           shuffle=False).next()
    ref = (x.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert torch.allclose(xb, ref, atol=1e-5) and yb.tolist() == list(range(6))
    cl, _ = DeviceBatches(x, torch.arange(6), 6, mean=mean, std=std, channels_last=True,
                          dtype=torch.bfloat16).next()
    assert cl.is_contiguous(memory_format=torch.channels_last) and cl.dtype == torch.bfloat16
    # padded pixels are zeros before normalisation, i.e. -mean/std after it
    d = load_dataset("digits")
    big = torch.zeros(4, 3, 16, 16, dtype=torch.uint8)
    out, _ = DeviceBatches(big, torch.arange(4), 4, mean=d.mean, std=d.std, flip=False).next()
    assert torch.allclose(out, torch.full_like(out, -d.mean[0] / d.std[0]), atol=1e-5)


def test_eval_batches_in_order_without_augmentation():
    x = _images(23)
    ev = EvalBatches(x, torch.arange(23), 10, **RAW)
    assert len(ev) == 3
    for _ in range(2):  # re-iterable
        got = list(ev)
        assert [len(b[1]) for b in got] == [10, 10, 3]
        assert torch.equal(torch.cat([b[0] for b in got]), x.float())
        assert torch.cat([b[1] for b in got]).tolist() == list(range(23))
    d = load_dataset("digits")
    tb = eval_batches(d, batch_size=100)
    assert len(tb) == 4 and sum(len(b[1]) for b in tb) == 360


# ------------------------------------------------------------------------------------------
# search data (train/val pairs)
# ------------------------------------------------------------------------------------------
def _fake_ds(n=60, size=16):
    x = _images(n, size)
    return Dataset("fake", x, torch.arange(n), x[:5].clone(), torch.arange(5), n, *RAW.values())


@pytest.mark.parametrize("split", ["half", "random"])
def test_search_data_pairs_train_and_val(split):
    ds = _fake_ds(60)
    sd = SearchData.from_dataset(ds, batch_size=8, split=split, seed=0)
    tr, va = split_indices(60, split, 0)
    assert len(sd) == 4
    for _ in range(2):
        train_seen, val_seen = [], []
        for xt, yt, xv, yv in sd:
            assert xt.shape[1:] == xv.shape[1:] == (3, 16, 16)
            train_seen += yt.tolist()
            val_seen += yv.tolist()
        assert sorted(train_seen) == tr.tolist()  # train half exactly once per epoch
        assert set(val_seen) <= set(va.tolist())  # val batches only from the val half
    assert sd.epoch == 2


def test_search_data_subset_and_seeds():
    ds = _fake_ds(60)
    sd = SearchData.from_dataset(ds, batch_size=4, subset=20, split="half")
    tr = sorted(torch.cat([b[1] for b in sd]).tolist())
    assert tr == list(range(10))
    assert sd.val.num_samples == 10 and set(sd.val.labels.tolist()) == set(range(10, 20))
    a = [b[1].tolist() for b in SearchData.from_dataset(ds, batch_size=4, seed=1)]
    b = [b[1].tolist() for b in SearchData.from_dataset(ds, batch_size=4, seed=1)]
    c = [b[1].tolist() for b in SearchData.from_dataset(ds, batch_size=4, seed=2)]
    assert a == b and a != c
    # the random partition depends on split_seed, not on the search seed
    s1 = SearchData.from_dataset(ds, batch_size=4, split="random", seed=1)
    s2 = SearchData.from_dataset(ds, batch_size=4, split="random", seed=2)
    assert torch.equal(s1.val.labels, s2.val.labels)


def test_search_data_state_round_trip():
    ds = _fake_ds(50)
    a = SearchData.from_dataset(ds, batch_size=6, seed=3)
    it = iter(a)
    for _ in range(2):
        next(it)
    state = copy.deepcopy(a.state_dict())
    rest = list(it) + list(a)  # rest of this epoch and the whole next one
    b = SearchData.from_dataset(ds, batch_size=6, seed=99)
    b.load_state_dict(state)
    again = list(b) + list(b)
    assert len(rest) == len(again) == 3 + 5
    for r, g in zip(rest, again):
        assert all(torch.equal(u, v) for u, v in zip(r, g))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_iteration_does_not_sync():
    ds = _fake_ds(300, size=32)
    sd = SearchData.from_dataset(ds, batch_size=64, device="cuda", channels_last=True)
    ev = EvalBatches(ds.test_x.cuda(), ds.test_y.cuda(), 2, **RAW)
    list(sd)  # warm-up (first epoch allocates)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for xt, yt, xv, yv in sd:
            assert xt.is_cuda and yv.is_cuda
        for _ in ev:
            pass
    finally:
        torch.cuda.set_sync_debug_mode("default")
    state = sd.state_dict()
    sd2 = SearchData.from_dataset(ds, batch_size=64, device="cuda", seed=5, channels_last=True)
    sd2.load_state_dict(state)
    for r, g in zip(list(sd), list(sd2)):
        assert all(torch.equal(u, v) for u, v in zip(r, g))


# ------------------------------------------------------------------------------------------
# the real CIFAR-10 (JPEG copy), when present
# ------------------------------------------------------------------------------------------
@pytest.mark.skipif(not JPEG_NPZ.is_file(), reason=f"{JPEG_NPZ} not present")
def test_cifar10_from_jpeg(tmp_path):
    # rebuilding takes ~7 s here (measured), under the 20 s threshold for @slow
    out = tmp_path / "cifar-10-batches-py"
    try:
        subprocess.run([sys.executable, str(JPEG_TOOL), str(JPEG_NPZ), str(out)], check=True,
                       capture_output=True)
        ds = load_dataset("cifar10", tmp_path, download=False)
        assert ds.train_x.shape == (50000, 3, 32, 32) and ds.test_x.shape == (10000, 3, 32, 32)
        assert torch.bincount(ds.train_y).tolist() == [5000] * 10
        assert torch.bincount(ds.test_y).tolist() == [1000] * 10
        # per-channel statistics close to the DARTS constants (JPEG shifts them slightly)
        m = (ds.train_x[:5000].float() / 255).mean(dim=(0, 2, 3))
        assert torch.allclose(m, torch.tensor(ds.mean), atol=0.02)
    finally:
        shutil.rmtree(out, ignore_errors=True)
