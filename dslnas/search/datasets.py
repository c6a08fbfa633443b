"""Datasets for the search: CIFAR-10, CIFAR-100 (standard python pickles), SVHN (the official
``*_32x32.mat`` files, torchvision's layout) and a tiny offline ``digits`` set (scikit-learn's
8x8 digits, upsampled to 3x16x16) for quick runs and tests.

Everything is loaded once into uint8 tensors (N x C x H x W); the loader in
:mod:`dslnas.search.loader` moves them to the compute device and augments there.

Any problem a user can fix (missing folder, bad archive, corrupt pickle, unknown name) raises
:class:`DataError` with a message that says what to put where; the CLI prints it and exits 2.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import tarfile
import urllib.request
from pathlib import Path

import attrs
import numpy as np
import torch

__all__ = [
    "DataError",
    "Dataset",
    "load_dataset",
    "DATASETS",
    "NORMS",
    "CIFAR_SOURCES",
    "SVHN_FILES",
]


class DataError(Exception):
    """A data problem the user can fix; the message says how."""


# --------------------------------------------------------------------------------------------
# normalisation constants (reference/spaces.md 1.9, 2.6, 2.7, 3.5)
# --------------------------------------------------------------------------------------------
# "darts": the DARTS/PC-DARTS/DrNAS/R-DARTS code's constants (DrNAS uses them on NB201 too).
# "nb201": AutoDL's get_datasets constants (x/255). SVHN: R-DARTS' under both (AutoDL has none).
NORMS: dict[str, dict[str, tuple[tuple[float, ...], tuple[float, ...]]]] = {
    "cifar10": {
        "darts": ((0.49139968, 0.48215827, 0.44653124), (0.24703233, 0.24348505, 0.26158768)),
        "nb201": (
            tuple(v / 255 for v in (125.3, 123.0, 113.9)),
            tuple(v / 255 for v in (63.0, 62.1, 66.7)),
        ),
    },
    "cifar100": {
        "darts": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
        "nb201": (
            tuple(v / 255 for v in (129.3, 124.1, 112.4)),
            tuple(v / 255 for v in (68.2, 65.4, 70.4)),
        ),
    },
    "svhn": {
        "darts": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
        "nb201": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    },
}
_NORM_NAMES = ("darts", "nb201")


@attrs.define(frozen=True, eq=False)
class Dataset:
    """A whole dataset in memory as uint8 images (N x C x H x W) and int64 labels (CPU)."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    mean: tuple[float, ...]  # per channel, on the [0, 1] scale
    std: tuple[float, ...]

    @property
    def in_channels(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train_x.shape[2])

    def __repr__(self) -> str:  # tensors would flood the terminal
        return (
            f"Dataset({self.name!r}, train={tuple(self.train_x.shape)}, "
            f"test={tuple(self.test_x.shape)}, classes={self.num_classes})"
        )


# --------------------------------------------------------------------------------------------
# CIFAR: files, archives, download
# --------------------------------------------------------------------------------------------
@attrs.frozen
class _CifarSource:
    title: str
    folder: str  # what the archive extracts to
    tarball: str
    url: str
    md5: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    label_key: str
    num_classes: int


CIFAR_SOURCES: dict[str, _CifarSource] = {
    "cifar10": _CifarSource(
        title="CIFAR-10",
        folder="cifar-10-batches-py",
        tarball="cifar-10-python.tar.gz",
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_files=("test_batch",),
        label_key="labels",
        num_classes=10,
    ),
    "cifar100": _CifarSource(
        title="CIFAR-100",
        folder="cifar-100-python",
        tarball="cifar-100-python.tar.gz",
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85",
        train_files=("train",),
        test_files=("test",),
        label_key="fine_labels",
        num_classes=100,
    ),
}

DOWNLOAD_TIMEOUT_S = 10.0


def _md5(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _download(url: str, dest: Path, timeout: float = DOWNLOAD_TIMEOUT_S) -> None:
    """Fetch ``url`` into ``dest`` (written as ``dest.part`` then renamed). Raises on failure.

    Module level so tests can replace it and never touch the network.
    """
    part = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r, open(part, "wb") as f:
            shutil.copyfileobj(r, f, length=1 << 20)
        os.replace(part, dest)
    finally:
        if part.exists():
            part.unlink()


def _how_to(src: _CifarSource, root: Path) -> str:
    return (
        f"Put the {src.title} python version in {root}: either the extracted folder "
        f"{root / src.folder}/ (containing {', '.join(src.train_files + src.test_files)}), "
        f"or the archive {root / src.tarball} (md5 {src.md5}; it is checked and extracted "
        f"automatically). Get it from {src.url}, e.g. "
        f"`wget -P {root} {src.url}` or `tar -xzf {src.tarball} -C {root}`."
    )


def _extract(src: _CifarSource, tar_path: Path, root: Path) -> None:
    got = _md5(tar_path)
    if got != src.md5:
        raise DataError(
            f"{tar_path} is corrupt or not the {src.title} python archive "
            f"(md5 {got}, expected {src.md5}). Delete it and try again. " + _how_to(src, root)
        )
    try:
        with tarfile.open(tar_path, "r:gz") as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(root, filter="data")
            else:  # older Pythons: refuse members that would land outside root
                base = root.resolve()
                for m in tar.getmembers():
                    if not (m.isfile() or m.isdir()) or base not in (base / m.name).resolve().parents:
                        raise tarfile.TarError(f"unsafe member {m.name!r}")
                tar.extractall(root)
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"could not extract {tar_path}: {e}. " + _how_to(src, root)) from None
    if not (root / src.folder).is_dir():
        raise DataError(
            f"{tar_path} did not contain the folder {src.folder}/. " + _how_to(src, root)
        )


def _ensure_cifar(src: _CifarSource, root: Path, download: bool, timeout: float) -> Path:
    folder = root / src.folder
    if folder.is_dir():
        return folder
    tar_path = root / src.tarball
    if not tar_path.is_file():
        if not download:
            raise DataError(f"{src.title} not found: no folder {folder}/. " + _how_to(src, root))
        try:
            root.mkdir(parents=True, exist_ok=True)
            _download(src.url, tar_path, timeout)
        except Exception as e:  # any network/file failure becomes a user-facing message
            raise DataError(
                f"{src.title} not found: no folder {folder}/ and no archive {tar_path}, and "
                f"downloading {src.url} failed ({type(e).__name__}: {e}). " + _how_to(src, root)
            ) from None
    _extract(src, tar_path, root)
    return folder


def _read_pickle(path: Path, label_key: str, src: _CifarSource, root: Path):
    if not path.is_file():
        raise DataError(f"{src.title}: missing file {path}. " + _how_to(src, root))
    try:
        with open(path, "rb") as f:
            # latin1 reads the original (Python 2) pickles and Python 3 ones alike
            d = pickle.load(f, encoding="latin1")
        d = {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in d.items()}
        data = np.asarray(d["data"], dtype=np.uint8)
        labels = np.asarray(d[label_key], dtype=np.int64)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
            raise ValueError(
                f"expected 'data' of shape (N, 3072) and N labels, got data {data.shape} "
                f"and {len(labels)} labels"
            )
    except DataError:
        raise
    except Exception as e:  # unpickling errors come in many types
        raise DataError(
            f"{src.title}: {path} is corrupt or not a CIFAR batch ({type(e).__name__}: {e}). "
            f"Delete the folder {root / src.folder}/ and extract {src.tarball} again. "
            + _how_to(src, root)
        ) from None
    # rows are 3072 bytes: the 1024 R values, then G, then B, each row-major 32x32
    return data.reshape(-1, 3, 32, 32), labels


def _load_cifar(name: str, root, norm: str, download: bool, timeout: float) -> Dataset:
    src = CIFAR_SOURCES[name]
    if root is None:
        raise DataError(f"{src.title} needs a data root folder. " + _how_to(src, Path("DATA_ROOT")))
    root = Path(root).expanduser()
    folder = _ensure_cifar(src, root, download, timeout)

    def read(files):
        parts = [_read_pickle(folder / fn, src.label_key, src, root) for fn in files]
        x = np.concatenate([p[0] for p in parts])
        y = np.concatenate([p[1] for p in parts])
        return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y)

    train_x, train_y = read(src.train_files)
    test_x, test_y = read(src.test_files)
    for y in (train_y, test_y):
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= src.num_classes):
            raise DataError(f"{src.title}: labels outside 0..{src.num_classes - 1} in {folder}/")
    mean, std = NORMS[name][norm]
    return Dataset(name, train_x, train_y, test_x, test_y, src.num_classes, mean, std)


# --------------------------------------------------------------------------------------------
# SVHN: the official .mat files (train 73,257 and test 26,032 images; no `extra`, as R-DARTS)
# --------------------------------------------------------------------------------------------
SVHN_URL = "http://ufldl.stanford.edu/housenumbers/"
SVHN_FILES = {  # split: (file, md5)
    "train": ("train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373"),
    "test": ("test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3"),
}


def _svhn_how_to(root: Path) -> str:
    files = [f for f, _ in SVHN_FILES.values()]
    return (
        f"Put the SVHN cropped-digit files {' and '.join(files)} (the 32x32 format, as "
        f"torchvision's SVHN stores them) directly in {root}/. Get them from {SVHN_URL}, e.g. "
        f"`wget -P {root} {SVHN_URL}{files[0]} {SVHN_URL}{files[1]}`."
    )


def _ensure_svhn_file(root: Path, name: str, md5: str, download: bool, timeout: float) -> Path:
    """``root/name``, md5-checked as torchvision checks it (the file is the archive itself);
    downloaded first if it is missing and ``download``."""
    path = root / name
    if path.is_file():
        got = _md5(path)
        if got != md5:
            raise DataError(f"{path} is not the official SVHN file (md5 {got}, expected {md5}); "
                            f"delete it and try again. " + _svhn_how_to(root))
        return path
    if not download:
        raise DataError(f"SVHN not found: no file {path}. " + _svhn_how_to(root))
    url = SVHN_URL + name
    try:
        root.mkdir(parents=True, exist_ok=True)
        _download(url, path, timeout)
    except Exception as e:  # any network/file failure becomes a user-facing message
        raise DataError(f"SVHN not found: no file {path}, and downloading {url} failed "
                        f"({type(e).__name__}: {e}). " + _svhn_how_to(root)) from None
    got = _md5(path)
    if got != md5:
        path.unlink()
        raise DataError(f"the download of {url} is corrupt (md5 {got}, expected {md5}); it was "
                        f"deleted. Try again. " + _svhn_how_to(root))
    return path


def _read_svhn(path: Path, root: Path):
    from scipy.io import loadmat  # scikit-learn's dependency; only SVHN needs it

    try:
        d = loadmat(path)
        x, y = np.asarray(d["X"]), np.asarray(d["y"]).reshape(-1)
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.shape[3] != len(y):
            raise ValueError(f"expected 'X' of uint8 (32, 32, 3, N) and N labels, got 'X' "
                             f"{x.dtype} {x.shape} and {len(y)} labels")
        if len(y) and (int(y.min()) < 1 or int(y.max()) > 10):
            raise ValueError("labels outside 1..10")
    except Exception as e:  # loadmat fails in many ways on a truncated or foreign file
        raise DataError(f"SVHN: {path} is corrupt or not an SVHN 32x32 file "
                        f"({type(e).__name__}: {e}). Delete it and try again. "
                        + _svhn_how_to(root)) from None
    # the files label the digit 0 as 10; (H, W, C, N) -> (N, C, H, W)
    y = np.where(y == 10, 0, y).astype(np.int64)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(3, 2, 0, 1))), torch.from_numpy(y)


def _load_svhn(root, norm: str, download: bool, timeout: float) -> Dataset:
    if root is None:
        raise DataError("SVHN needs a data root folder. " + _svhn_how_to(Path("DATA_ROOT")))
    root = Path(root).expanduser()
    paths = {split: _ensure_svhn_file(root, name, md5, download, timeout)
             for split, (name, md5) in SVHN_FILES.items()}
    train_x, train_y = _read_svhn(paths["train"], root)
    test_x, test_y = _read_svhn(paths["test"], root)
    mean, std = NORMS["svhn"][norm]
    return Dataset("svhn", train_x, train_y, test_x, test_y, 10, mean, std)


# --------------------------------------------------------------------------------------------
# digits (offline, tiny)
# --------------------------------------------------------------------------------------------
DIGITS_TRAIN = 1437  # of 1797; the remaining 360 are the test set


def _load_digits(norm: str) -> Dataset:
    from sklearn.datasets import load_digits  # shipped with scikit-learn, no network

    d = load_digits()
    img = np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)  # 0..16 -> 0..255
    img = img.repeat(2, axis=1).repeat(2, axis=2)  # nearest 8x8 -> 16x16
    img = np.repeat(img[:, None], 3, axis=1)  # 3 identical channels so RGB supernets run
    y = d.target.astype(np.int64)
    # fixed shuffle (the raw order is by writer) so contiguous splits are class-balanced
    order = np.random.default_rng(0).permutation(len(img))
    img, y = img[order], y[order]
    x = torch.from_numpy(np.ascontiguousarray(img))
    y = torch.from_numpy(y)
    train_x, train_y = x[:DIGITS_TRAIN].clone(), y[:DIGITS_TRAIN].clone()
    test_x, test_y = x[DIGITS_TRAIN:].clone(), y[DIGITS_TRAIN:].clone()
    # no published constants: per-channel statistics of the training images (same for both norms)
    f = train_x.double() / 255.0
    mean = tuple(float(v) for v in f.mean(dim=(0, 2, 3)))
    std = tuple(float(v) for v in f.std(dim=(0, 2, 3)))
    return Dataset("digits", train_x, train_y, test_x, test_y, 10, mean, std)


# --------------------------------------------------------------------------------------------
DATASETS = ("cifar10", "cifar100", "svhn", "digits")


def load_dataset(
    name: str,
    root: str | os.PathLike | None = None,
    *,
    norm: str = "darts",
    download: bool = True,
    timeout: float = DOWNLOAD_TIMEOUT_S,
) -> Dataset:
    """Load ``name`` (``cifar10``, ``cifar100``, ``svhn`` or ``digits``) from ``root``.

    ``norm`` picks the normalisation constants: ``"darts"`` (DARTS code, default) or ``"nb201"``
    (AutoDL/NB201). CIFAR folders missing from ``root`` are extracted from the archive there
    (md5-checked) or, if ``download``, fetched from the official address first; SVHN's two
    ``.mat`` files are read from ``root`` itself (downloaded and md5-checked if missing).
    ``digits`` ignores ``root``. Raises :class:`DataError` for anything the user must fix.
    """
    key = name.lower().replace("-", "").replace("_", "")
    if key not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if norm not in _NORM_NAMES:
        raise DataError(f"unknown normalisation {norm!r}; choose one of {', '.join(_NORM_NAMES)}")
    if key == "digits":
        return _load_digits(norm)
    if key == "svhn":
        return _load_svhn(root, norm, download, timeout)
    return _load_cifar(key, root, norm, download, timeout)
