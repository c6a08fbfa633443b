"""Atomic, self-checking search checkpoints.

A checkpoint is one file: a fixed header (magic, format version, payload length, SHA-256 of the
payload) followed by the payload, a ``torch.save`` of a plain dict of tensors, numbers, strings,
lists and dicts. ``save`` writes a temporary file in the same folder, fsyncs it and moves it over
the old checkpoint with ``os.replace``, so a run killed at any moment leaves either the previous
checkpoint or the new one, never a mix. ``load`` checks the header, the length and the hash before
unpickling (with ``weights_only=True``: a checkpoint can hold no code), so a truncated or corrupt
file raises :class:`CheckpointError` with a message that says what is wrong, never a traceback.

RNG helpers (``rng_state`` / ``set_rng_state``) capture Python's, NumPy's and torch's generators
(CPU and every CUDA device) in that same plain form.
"""
from __future__ import annotations

import hashlib
import io
import os
import random
import struct
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["CheckpointError", "save", "load", "rng_state", "set_rng_state", "FORMAT_VERSION",
           "CHECKPOINT_NAME"]

MAGIC = b"DSLNASCK"
FORMAT_VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"
_HEADER = struct.Struct("<8sIQ32s")       # magic, version, payload length, sha256(payload)


class CheckpointError(Exception):
    """A checkpoint that cannot be written, or read back (missing, truncated, corrupt, foreign)."""


def save(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``state`` to ``path`` atomically (temp file + fsync + ``os.replace``)."""
    path = Path(path)
    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getvalue()
    header = _HEADER.pack(MAGIC, FORMAT_VERSION, len(payload), hashlib.sha256(payload).digest())
    tmp_name = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(header)
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
        tmp_name = None
        _fsync_dir(path.parent)
    except OSError as e:
        raise CheckpointError(f"cannot write checkpoint {path}: {e.strerror or e}") from None
    finally:
        if tmp_name is not None:
            try:
                os.unlink(tmp_name)
            except OSError:
                pass
    return path


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load(path: str | os.PathLike, map_location: str | torch.device | None = "cpu") -> dict:
    """Read a checkpoint written by :func:`save`; raise :class:`CheckpointError` if it is not one."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint at {path}") from None
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e.strerror or e}") from None
    if not MAGIC.startswith(data[:len(MAGIC)]):
        raise CheckpointError(f"{path} is not a dslnas checkpoint (bad magic bytes)")
    if len(data) < _HEADER.size:
        raise CheckpointError(f"checkpoint {path} is truncated ({len(data)} bytes, not even a "
                              f"header); the run cannot be resumed from it")
    _magic, version, length, digest = _HEADER.unpack_from(data)
    if version != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path} has format version {version}; this dslnas "
                              f"reads version {FORMAT_VERSION}")
    payload = data[_HEADER.size:]
    if len(payload) != length:
        raise CheckpointError(f"checkpoint {path} is truncated or padded: {len(payload)} payload "
                              f"bytes, expected {length}; the run cannot be resumed from it")
    if hashlib.sha256(payload).digest() != digest:
        raise CheckpointError(f"checkpoint {path} is corrupt (checksum mismatch); the run cannot "
                              f"be resumed from it")
    try:
        state = torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
    except Exception as e:                               # noqa: BLE001 - any unpickling failure
        raise CheckpointError(f"checkpoint {path} cannot be unpickled: {e}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} does not hold a state dict")
    return state


def require(state: dict, keys: tuple[str, ...], path: str | os.PathLike) -> None:
    missing = [k for k in keys if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {', '.join(missing)}; it was written by "
                              f"another tool or version")


# ---- RNG states, as plain tensors and lists (loadable with weights_only=True) ---------------

def rng_state() -> dict[str, Any]:
    version, keys, gauss = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python": [version, list(keys), gauss],
        "numpy": [np_kind, torch.from_numpy(np.asarray(np_keys, dtype=np.int64)), int(np_pos),
                  int(np_has_gauss), float(np_gauss)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, keys, gauss = state["python"]
    random.setstate((version, tuple(keys), gauss))
    kind, keys, pos, has_gauss, g = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, g))
    torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available():
        n = min(len(cuda), torch.cuda.device_count())
        for i in range(n):
            torch.cuda.set_rng_state(cuda[i].cpu(), i)
