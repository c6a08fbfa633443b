"""Training recipes: how a searched genotype is trained from scratch to be evaluated.

A recipe is the schedule and regularisation of the evaluation phase plus the network size it
trains (e.g. DARTS trains its cells in a 20-cell, 36-channel network, not the 8-cell, 16-channel
search network). Every field can be overridden (``dslnas train --set lr=0.05``); sources and
choices are in docs/training.md.
"""
from __future__ import annotations

import attrs

__all__ = ["Recipe", "RECIPES", "default_recipe", "recipe_fields"]


@attrs.frozen(kw_only=True)
class Recipe:
    name: str
    epochs: int
    batch_size: int
    lr: float                       # cosine-annealed from lr to lr_min over the epochs
    lr_min: float = 0.0
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float
    grad_clip: float = 0.0          # max global gradient norm; 0: no clipping
    cutout: int = 0                 # side of the cutout square in pixels; 0: none
    drop_path: float = 0.0          # the last epoch's drop-path probability (linear from 0)
    auxiliary: float = 0.0          # loss weight of the auxiliary head; 0: no head
    eval_batch_size: int = 256
    network: dict = attrs.field(factory=dict)   # network parameters of the space, e.g. C, L

    def to_dict(self) -> dict:
        return attrs.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Recipe":
        return cls(**d)


RECIPES: dict[str, Recipe] = {
    # DARTS cnn/train.py and the issue #107 author reply (reference/methods.md §DARTS (b))
    "darts": Recipe(name="darts", epochs=600, batch_size=96, lr=0.025, weight_decay=3e-4,
                    grad_clip=5.0, cutout=16, drop_path=0.2, auxiliary=0.4,
                    network={"C": 36, "L": 20}),
    # RobustDARTS src/evaluation/args.py defaults (+ the scripts' --auxiliary --cutout): the
    # DARTS recipe in the 8-cell, 16-channel network, the de-facto S1-S4 protocol on CIFAR-100
    # and SVHN (reference/spaces.md 3.5)
    "rdarts": Recipe(name="rdarts", epochs=600, batch_size=96, lr=0.025, weight_decay=3e-4,
                     grad_clip=5.0, cutout=16, drop_path=0.2, auxiliary=0.4,
                     network={"C": 16, "L": 8}),
    # NAS-Bench-201's training of every architecture: AutoDL configs/nas-benchmark/hyper-opts/
    # 200E.config (reference/spaces.md 2.8)
    "nb201": Recipe(name="nb201", epochs=200, batch_size=256, lr=0.1, nesterov=True,
                    weight_decay=5e-4, network={"C": 16, "N": 5}),
}


ROBUST_DARTS_SPACES = ("s1", "s2", "s3", "s4")


def default_recipe(family: str, dataset: str = "cifar10", space: str = "") -> str:
    """The recipe a space trains with on ``dataset`` unless ``--recipe`` says otherwise:
    DARTS-family cells in DARTS' 20-cell network, except RobustDARTS' spaces S1-S4 on CIFAR-100
    and SVHN, which R-DARTS' follow-ups evaluate in the 8-cell one (reference/spaces.md 3.5)."""
    if family == "nb201":
        return "nb201"
    robust = space in ROBUST_DARTS_SPACES and dataset in ("cifar100", "svhn")
    return "rdarts" if robust else "darts"


def recipe_fields() -> dict[str, attrs.Attribute]:
    """The fields ``--set`` may change (not the name, not the network: those are flags and
    network parameters)."""
    return {a.name: a for a in attrs.fields(Recipe) if a.name not in ("name", "network")}
