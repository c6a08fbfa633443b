#!/usr/bin/env python3
"""Copy the CIFAR-10 JPEG archive without its 10,000 test images, for the device machine.

    python benchmarks/cifar10_train_only.py ../shared/data/cifar10-jpeg.npz .device-data/cifar10-train-jpeg.npz

A search reads only the 50,000 training images. Without the test JPEGs the archive is about
9 MB smaller (46.5 instead of 55.8 MB), which is the room a search checkpoint (13.9 MB for
NB201) needs to travel with the data in one device call's 64 MiB, so a search can span calls
(benchmarks/reproduce_nb201.py, --collect-checkpoints). The copy keeps the archive's keys, so
the shared `cifar10_from_jpeg.py` rebuilds it; its test_batch then holds no images. The copy
is derived data: write it to a git-ignored folder, never into the project.
"""
import sys

import numpy as np


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(__doc__.strip().splitlines()[2].strip())
    src = np.load(sys.argv[1])
    out = {k: src[k] for k in src.files}
    out["test_jpeg"] = np.zeros(0, dtype=src["test_jpeg"].dtype)
    out["test_offsets"] = np.zeros(1, dtype=src["test_offsets"].dtype)
    out["test_labels"] = np.zeros(0, dtype=src["test_labels"].dtype)
    with open(sys.argv[2], "wb") as f:
        np.savez(f, **out)


if __name__ == "__main__":
    main()
