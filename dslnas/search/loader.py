"""Device-resident batches for the search, in the spirit of airbench.

The images of a split live on the compute device as uint8 (N x C x H x W). Each batch is
gathered with a device-side permutation, randomly cropped (zero padding) and flipped with one
vectorised gather, converted to float and normalised there. The iteration does no host syncs
(no ``.item()``, no ``.cpu()``, no boolean masks), so it never stalls the GPU.

* :func:`split_indices` -- the two reference splits of the training set (``half``: DARTS,
  ``random``: NB201's fixed random partition).
* :class:`DeviceBatches` -- one shuffled, augmented stream; resumable via ``state_dict``.
* :class:`SearchData` -- (x_train, y_train, x_val, y_val) per step: one epoch of the train half
  paired with an independent, endlessly reshuffled cycle of the val half (both augmented, as in
  the references).
* :class:`EvalBatches` -- plain in-order batches without augmentation (test set, monitoring).
"""
from __future__ import annotations

import math
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .datasets import Dataset

__all__ = [
    "SPLITS",
    "split_indices",
    "DeviceBatches",
    "SearchData",
    "EvalBatches",
    "eval_batches",
]

SPLITS = ("half", "random")


def split_indices(
    n: int, kind: str = "half", seed: int = 0, portion: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``range(n)`` into (weight-training indices, architecture/val indices), int64, CPU.

    ``half``   (DARTS, PC-DARTS, DrNAS, R-DARTS): the first ``floor(portion*n)`` indices train the
               weights and the rest train alpha; the randomness is the per-epoch shuffle inside
               each part. ``seed`` is ignored.
    ``random`` (NB201's ``cifar-split.txt`` style): a fixed random partition drawn from ``seed``;
               both parts are returned sorted.
    """
    if n < 2:
        raise ValueError(f"need at least 2 training images to split, got {n}")
    k = int(math.floor(portion * n))
    if not 0 < k < n:
        raise ValueError(f"portion {portion} leaves an empty part of {n} images")
    if kind == "half":
        idx = torch.arange(n, dtype=torch.int64)
        return idx[:k], idx[k:]
    if kind == "random":
        perm = torch.from_numpy(np.random.default_rng(seed).permutation(n).astype(np.int64))
        return perm[:k].sort().values, perm[k:].sort().values
    raise ValueError(f"unknown split {kind!r}; choose one of {', '.join(SPLITS)}")


def _default_pad(size: int) -> int:
    return max(1, size // 8)  # 32 -> 4 (CIFAR), 16 -> 2 (ImageNet16, digits)


class _Normalize:
    """uint8 [0, 255] -> (x/255 - mean)/std as one fused multiply-add, optional channels_last."""

    def __init__(self, mean, std, device, dtype, channels_last):
        mean = torch.as_tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        std = torch.as_tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.scale = 1.0 / (255.0 * std)
        self.shift = -mean / std
        self.dtype = dtype
        self.channels_last = channels_last

    def __call__(self, x_u8: torch.Tensor) -> torch.Tensor:
        x = torch.addcmul(self.shift, x_u8.to(torch.float32), self.scale).to(self.dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x


def _check_pair(images: torch.Tensor, labels: torch.Tensor) -> None:
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(f"images must be uint8 N x C x H x W, got {images.dtype} {tuple(images.shape)}")
    if labels.dim() != 1 or len(labels) != len(images):
        raise ValueError(f"labels must be 1-D with {len(images)} entries, got {tuple(labels.shape)}")
    if labels.device != images.device:
        raise ValueError(f"images on {images.device} but labels on {labels.device}")


class DeviceBatches:
    """Shuffled, augmented, normalised batches of uint8 images that stay on their device.

    Each epoch visits every image exactly once in a fresh random permutation (drawn from
    ``generator`` on the images' device); the last partial batch is kept unless ``drop_last``.
    ``crop`` pads by ``pad`` (default H//8: 4 for 32x32, 2 for 16x16) with zeros and takes a
    random HxW window; ``flip`` mirrors horizontally with probability 1/2. Both are done for the
    whole batch with a single gather. ``cutout`` > 0 then zeroes, after normalising, a square
    of that side centred at a uniformly random pixel of each image and clipped at the borders
    (DARTS' ``Cutout``: zero in normalised units, i.e. the mean colour).

    ``iter(stream)`` yields the rest of the current epoch; ``stream.next()`` returns the next
    batch and rolls over to a new epoch when one ends (an endless cycle). ``state_dict()``
    captures generator state, epoch, position and the epoch's permutation, so a resumed run
    sees exactly the batches it would have seen.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        crop: bool = True,
        flip: bool = True,
        pad: int | None = None,
        cutout: int = 0,
        shuffle: bool = True,
        drop_last: bool = False,
        generator: torch.Generator | None = None,
        seed: int = 0,
        channels_last: bool = False,
        dtype: torch.dtype = torch.float32,
    ):
        _check_pair(images, labels)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if cutout < 0:
            raise ValueError(f"cutout must be >= 0, got {cutout}")
        n, _, h, w = images.shape
        if n == 0 or (drop_last and n < batch_size):
            raise ValueError(f"{n} images give no batch of {batch_size} (drop_last={drop_last})")
        self.images, self.labels = images, labels
        self.device = images.device
        self.batch_size = int(batch_size)
        self.crop, self.flip, self.shuffle, self.drop_last = crop, flip, shuffle, drop_last
        self.pad = (_default_pad(min(h, w)) if pad is None else int(pad)) if crop else 0
        self.cutout = int(cutout)
        self.cutout_prob = 1.0      # R-DARTS cuts each image with a probability (its search)
        if generator is None:
            generator = torch.Generator(device=self.device)
            generator.manual_seed(seed)
        elif generator.device.type != self.device.type:
            raise ValueError(f"generator on {generator.device} but images on {self.device}")
        self.generator = generator
        self.normalize = _Normalize(mean, std, self.device, dtype, channels_last)
        self._n = int(n)
        self._end = (self._n // self.batch_size) * self.batch_size if drop_last else self._n
        self._ar_h = torch.arange(h, device=self.device)
        self._ar_w = torch.arange(w, device=self.device)
        self._ar_w_rev = self._ar_w.flip(0)
        self._ar_c = torch.arange(images.shape[1], device=self.device).view(1, -1, 1, 1)
        self.epoch = 0  # epochs completed
        self.pos = 0  # position inside the current epoch's permutation
        self._perm: torch.Tensor | None = None  # drawn lazily when an epoch starts

    # ---- iteration ----------------------------------------------------------------------
    def __len__(self) -> int:
        """Batches per epoch."""
        return self._end // self.batch_size if self.drop_last else -(-self._n // self.batch_size)

    @property
    def num_samples(self) -> int:
        return self._n

    def _start_epoch(self) -> None:
        if self.shuffle:
            self._perm = torch.randperm(
                self._n, generator=self.generator, device=self.device, dtype=torch.int64
            )
        else:
            self._perm = torch.arange(self._n, device=self.device)
        self.pos = 0

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next (x, y); starts a new epoch when the current one is used up."""
        if self._perm is None:
            self._start_epoch()
        idx = self._perm[self.pos : self.pos + self.batch_size]
        self.pos += self.batch_size
        if self.pos >= self._end:
            self.epoch += 1
            self.pos = 0
            self._perm = None
        return self._make(idx)

    __next__ = next

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield the remaining batches of the current epoch (a whole epoch at a boundary)."""
        epoch = self.epoch
        while self.epoch == epoch:
            yield self.next()

    # ---- augmentation -------------------------------------------------------------------
    def _make(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.images.index_select(0, idx)
        y = self.labels.index_select(0, idx)
        if self.crop or self.flip:
            x = self._augment(x)
        x = self.normalize(x)
        if self.cutout:
            x = self._cutout(x)
        return x, y

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        """Random crop (zero padding) and horizontal flip of a whole uint8 batch in one gather."""
        b = x.shape[0]
        g, dev = self.generator, self.device
        p = self.pad
        if p > 0:
            x = F.pad(x, (p, p, p, p))
            off = torch.randint(0, 2 * p + 1, (2, b, 1), generator=g, device=dev)
            rows = off[0] + self._ar_h  # b x H
            cols = off[1] + self._ar_w  # b x W
        else:
            rows = self._ar_h.expand(b, -1)
            cols = self._ar_w.expand(b, -1)
        if self.flip:
            flip = torch.randint(0, 2, (b, 1), generator=g, device=dev, dtype=torch.bool)
            # a flipped window reads its columns right to left
            cols = cols[:, :1] + torch.where(flip, self._ar_w_rev, self._ar_w)
        bi = torch.arange(b, device=dev).view(b, 1, 1, 1)
        return x[bi, self._ar_c, rows[:, None, :, None], cols[:, None, None, :]]

    def _cutout(self, x: torch.Tensor) -> torch.Tensor:
        """Zero a ``cutout``-sided square per image (in place on the fresh normalised batch, so
        its memory format stays)."""
        b, _, h, w = x.shape
        g, dev, half = self.generator, self.device, self.cutout // 2
        cy = torch.randint(0, h, (b, 1), generator=g, device=dev)
        cx = torch.randint(0, w, (b, 1), generator=g, device=dev)
        # rows [cy - half, cy + half) and the same columns, clipped to the image by the arange
        in_y = (self._ar_h >= cy - half) & (self._ar_h < cy + half)        # b x H
        in_x = (self._ar_w >= cx - half) & (self._ar_w < cx + half)        # b x W
        keep = ~(in_y[:, :, None] & in_x[:, None, :])
        if self.cutout_prob < 1:    # drawn only then: DARTS' always-on cutout keeps its stream
            cut = torch.rand(b, 1, 1, generator=g, device=dev) < self.cutout_prob
            keep = keep | ~cut
        return x.mul_(keep.unsqueeze(1).to(x.dtype))

    # ---- resume -------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "n": self._n,
            "batch_size": self.batch_size,
            "epoch": self.epoch,
            "pos": self.pos,
            "perm": None if self._perm is None else self._perm.cpu(),
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        if state["n"] != self._n or state["batch_size"] != self.batch_size:
            raise ValueError(
                f"loader state is for {state['n']} images in batches of {state['batch_size']}, "
                f"this loader has {self._n} in batches of {self.batch_size}"
            )
        self.generator.set_state(state["generator"].cpu())
        self.epoch = int(state["epoch"])
        self.pos = int(state["pos"])
        perm = state["perm"]
        self._perm = None if perm is None else perm.to(self.device)


def _stream_seeds(seed: int) -> tuple[int, int]:
    a, b = np.random.SeedSequence(seed).generate_state(2, dtype=np.uint64)
    return int(a >> np.uint64(1)), int(b >> np.uint64(1))  # torch seeds must fit in int64


class SearchData:
    """Paired streams for the bilevel search: each step gives (x_train, y_train, x_val, y_val).

    One pass of ``iter(search_data)`` is one epoch of the train stream; each train batch is
    paired with the next batch of the val stream, an independent endlessly reshuffled cycle of
    the val part (DARTS' ``next(iter(valid_queue))``, NB201's ``SearchDataset``).
    """

    def __init__(self, train: DeviceBatches, val: DeviceBatches):
        if train.generator is val.generator:
            raise ValueError("train and val streams need their own generators")
        self.train, self.val = train, val

    @classmethod
    def from_dataset(
        cls,
        ds: Dataset,
        *,
        batch_size: int = 64,
        device: str | torch.device = "cpu",
        split: str = "half",
        split_seed: int = 0,
        seed: int = 0,
        subset: int | None = None,
        val_batch_size: int | None = None,
        crop: bool = True,
        flip: bool = True,
        drop_last: bool = False,
        channels_last: bool = False,
        dtype: torch.dtype = torch.float32,
        cutout: int = 0,
    ) -> "SearchData":
        """Split ``ds``'s training set, put both parts on ``device`` and wrap them.

        ``subset`` keeps the first N training images before splitting (quick runs).
        ``split_seed`` fixes the ``random`` partition independently of ``seed``, which seeds the
        shuffles and augmentations (so different search seeds share one partition, as NB201).
        ``cutout``: both streams cut, as R-DARTS' search does (one transform serves both).
        """
        device = torch.device(device)
        n = len(ds.train_x) if subset is None else min(int(subset), len(ds.train_x))
        tr, va = split_indices(n, split, split_seed)
        s_tr, s_va = _stream_seeds(seed)
        common = dict(
            mean=ds.mean, std=ds.std, crop=crop, flip=flip, drop_last=drop_last,
            channels_last=channels_last, dtype=dtype, cutout=cutout,
        )

        def stream(idx, bs, s):
            x = ds.train_x.index_select(0, idx).to(device)
            y = ds.train_y.index_select(0, idx).to(device)
            return DeviceBatches(x, y, bs, seed=s, **common)

        return cls(
            stream(tr, batch_size, s_tr),
            stream(va, val_batch_size or batch_size, s_va),
        )

    def __len__(self) -> int:
        return len(self.train)

    @property
    def epoch(self) -> int:
        return self.train.epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
        for x_train, y_train in self.train:
            x_val, y_val = self.val.next()
            yield x_train, y_train, x_val, y_val

    def state_dict(self) -> dict:
        return {"train": self.train.state_dict(), "val": self.val.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.train.load_state_dict(state["train"])
        self.val.load_state_dict(state["val"])


class EvalBatches:
    """In-order normalised batches without augmentation (test set or monitoring); re-iterable."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        channels_last: bool = False,
        dtype: torch.dtype = torch.float32,
    ):
        _check_pair(images, labels)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.images, self.labels, self.batch_size = images, labels, int(batch_size)
        self.normalize = _Normalize(mean, std, images.device, dtype, channels_last)

    def __len__(self) -> int:
        return -(-len(self.images) // self.batch_size)

    @property
    def num_samples(self) -> int:
        return len(self.images)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for i in range(0, len(self.images), self.batch_size):
            yield (
                self.normalize(self.images[i : i + self.batch_size]),
                self.labels[i : i + self.batch_size],
            )


def eval_batches(
    ds: Dataset,
    *,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    channels_last: bool = False,
    dtype: torch.dtype = torch.float32,
) -> EvalBatches:
    """The test set of ``ds`` on ``device``, as :class:`EvalBatches`."""
    device = torch.device(device)
    return EvalBatches(
        ds.test_x.to(device), ds.test_y.to(device), batch_size,
        mean=ds.mean, std=ds.std, channels_last=channels_last, dtype=dtype,
    )
