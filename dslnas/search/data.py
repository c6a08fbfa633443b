"""The search's data pipeline: one import point for datasets and device-resident loaders.

``load_dataset`` (:mod:`.datasets`) reads CIFAR-10/100, SVHN or the offline ``digits`` set into
uint8 tensors; ``SearchData`` / ``DeviceBatches`` / ``EvalBatches`` (:mod:`.loader`) keep the
images on the compute device and crop, flip and normalise whole batches there.
"""
from .datasets import CIFAR_SOURCES, DATASETS, NORMS, DataError, Dataset, load_dataset
from .loader import (
    SPLITS,
    DeviceBatches,
    EvalBatches,
    SearchData,
    eval_batches,
    split_indices,
)

__all__ = [
    "CIFAR_SOURCES",
    "DATASETS",
    "NORMS",
    "SPLITS",
    "DataError",
    "Dataset",
    "DeviceBatches",
    "EvalBatches",
    "SearchData",
    "eval_batches",
    "load_dataset",
    "split_indices",
]
