"""Method specs: a method is a frozen record of parts, so new methods are new combinations.

Parts (each resolved by name in its own module):
  relaxation     softmax | dirichlet | softmax_beta              (dslnas.methods.relaxations)
  hypergradient  first_order | unrolled | neumann | amended      (dslnas.methods.hypergrad)
  transforms     partial_channels | node_norm | random_features | progressive
                                                                 (dslnas.methods.transforms)
  discretizer    rule | decorrelation                            (dslnas.methods.discretizers)
  schedule       epochs, batch size, optimisers, warm-up, split, R-DARTS' drop-path
                 and cutout, curvature tracking and DARTS-ES     (below)

Defaults come from ../shared/reference/methods.md; ``space_defaults`` holds the per-space values
(keyed by the space family: "nb201" for 1-input argmax spaces, "darts" for the DARTS-like ones).
"""
from __future__ import annotations

import inspect
import math
from typing import Any

import attrs


ES_MODES = ("stop", "simulate", "ada")


def es_mode(value) -> str:
    """A DARTS-ES mode: "" (off) or one of ES_MODES; a boolean (configs written before the
    modes existed, ``--set early_stop=true``) reads as "stop" or off."""
    if value is None or isinstance(value, bool):
        return "stop" if value else ""
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return "stop"
    return "" if text in ("", "0", "false", "no", "off", "none") else text


@attrs.frozen
class Schedule:
    epochs: int = 50
    batch_size: int = 64
    w_lr: float = 0.025
    w_lr_min: float = 0.001
    w_momentum: float = 0.9
    w_nesterov: bool = False
    w_weight_decay: float = 3e-4
    grad_clip: float = 5.0
    a_lr: float = 3e-4
    a_betas: tuple[float, float] = (0.5, 0.999)
    a_weight_decay: float = 1e-3
    warmup_epochs: int = 0          # epochs with the architecture frozen
    inner_steps: int = 1            # weight steps per architecture step (iDARTS-Zhang's T)
    split: str = "half"             # "half" (DARTS) | "random" (NB201-style fixed 25k/25k)
    order: str = "arch_first"       # "arch_first" (DARTS code) | "weights_first" (AutoDL NB201)
    # RobustDARTS' search-time regularisation (R-DARTS(DP)): both rise linearly from 0 in the
    # first epoch to these values in the last
    drop_path: float = 0.0          # drop each edge's output per sample (cells.EdgeDropPath)
    cutout: int = 0                 # cutout square's side on train and val batches; 0: none
    cutout_prob: float = 1.0        # the last epoch's probability of cutting an image
    # RobustDARTS' curvature diagnostic and DARTS-ES (dslnas.search.curvature)
    hessian_every: int = 0          # measure the dominant eigenvalue of ∇²_α L_val every N epochs
    lanczos_steps: int = 0          # ... from the dense matrix (0, R-DARTS) or N Lanczos steps
    # DARTS-ES watches that eigenvalue: "" (off) | "stop" (return the genotype from before its
    # growth) | "simulate" (note that genotype, search on) | "ada" (DARTS-ADA: roll back to
    # that epoch, raise w's weight decay, search on)
    early_stop: str = attrs.field(default="", converter=es_mode)
    es_window: int = 5              # local-average window (odd)
    es_delta: int = 4               # compare with the local average this many values earlier
    es_factor: float = 1.3          # stop when the newer average exceeds the older by this
    es_start: int = 11              # never return a genotype from before this epoch
    ada_factor: float = 3.0         # DARTS-ADA multiplies w's weight decay by this at a decision
    ada_max_weight_decay: float = 243e-4    # ... up to this (R-DARTS: 3e-4·3⁴); once there,
                                            # the search runs to its end


ADA_MAX_RAISES = 20             # a guard against settings that would roll back for ever


def ada_raises(schedule: Schedule) -> int:
    """How many times DARTS-ADA can raise w's weight decay (each raise ×ada_factor, the last
    capped at ada_max_weight_decay); a float's worth of slack so 3e-4·3⁴ counts as 4."""
    ratio = schedule.ada_max_weight_decay / schedule.w_weight_decay
    return max(0, math.ceil(math.log(ratio) / math.log(schedule.ada_factor) - 1e-9))


@attrs.frozen
class Part:
    """A named part with its options, e.g. Part("partial_channels", {"K": 4})."""

    name: str
    options: dict[str, Any] = attrs.field(factory=dict, converter=dict)

    def __str__(self) -> str:
        if not self.options:
            return self.name
        return f"{self.name}(" + ", ".join(f"{k}={v}" for k, v in self.options.items()) + ")"


def _option_names(cls) -> list[str] | None:
    """The keyword options ``cls(...)`` takes, or None if it takes any (``**kwargs``)."""
    if attrs.has(cls):
        return [f.alias for f in attrs.fields(cls) if f.init]
    params = list(inspect.signature(cls).parameters.values())
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def instantiate(part: "Part | str", registry: dict, kind: str):
    """Build the class ``registry[part.name]`` with the part's options; clear errors otherwise."""
    name, options = (part, {}) if isinstance(part, str) else (part.name, dict(part.options))
    try:
        cls = registry[name]
    except KeyError:
        raise KeyError(f"unknown {kind} {name!r} (known: {', '.join(registry)})") from None
    known = _option_names(cls)
    unknown = [k for k in options if known is not None and k not in known]
    if unknown:
        raise TypeError(f"{kind} {name!r} has no option {', '.join(map(repr, unknown))} "
                        f"(its options: {', '.join(known) or 'none'})")
    try:
        return cls(**options)
    except TypeError as e:
        raise TypeError(f"{kind} {name!r}: bad options {options}: {e}") from None
    except ValueError as e:                      # a validator's message names the option
        raise ValueError(f"{kind} {name!r}: {e}") from None


@attrs.frozen
class MethodSpec:
    name: str
    summary: str
    relaxation: Part
    hypergradient: Part
    transforms: tuple[Part, ...]
    discretizer: Part
    schedule: Schedule
    # Per space family: schedule fields and part options that differ from the generic defaults.
    space_defaults: dict[str, dict[str, Any]] = attrs.field(factory=dict)

    def for_family(self, family: str) -> "MethodSpec":
        """This method with the defaults of a space family folded into its schedule/parts."""
        over = dict(self.space_defaults.get(family, {}))
        transforms = over.pop("transforms", None)
        schedule = attrs.evolve(self.schedule, **over)
        spec = attrs.evolve(self, schedule=schedule)
        if transforms is not None:
            spec = attrs.evolve(spec, transforms=tuple(transforms))
        return spec


# ---- the shipped methods -------------------------------------------------------

# NB201 DARTS-V1 (AutoDL): Nesterov, wd 5e-4, the fixed random 25k/25k split, weights step first.
_NB201_DARTS = dict(w_nesterov=True, w_weight_decay=5e-4, split="random", order="weights_first")
# NB201 DARTS-V2 (AutoDL) takes the α step first, so the train batch feeds the second-order
# terms before the weights train on it; the other second-order method does the same.
_NB201_2ND = dict(_NB201_DARTS, order="arch_first")
_PC = dict(epochs=50, batch_size=256, w_lr=0.1, w_lr_min=0.0, a_lr=6e-4, warmup_epochs=15)


def _m(name, summary, relaxation="softmax", hypergradient="first_order", transforms=(),
       discretizer="rule", schedule=None, **families) -> MethodSpec:
    def part(p):
        return p if isinstance(p, Part) else Part(p)
    return MethodSpec(name, summary, part(relaxation), part(hypergradient),
                      tuple(part(t) for t in transforms), part(discretizer),
                      schedule or Schedule(), families)


METHODS: dict[str, MethodSpec] = {m.name: m for m in [
    _m("darts", "DARTS, first order (Liu et al. 2019)", nb201=_NB201_DARTS),
    _m("darts-2nd", "DARTS, second order: one unrolled virtual step",
       hypergradient=Part("unrolled", {"eps": 0.01}), nb201=_NB201_2ND),
    _m("pc-darts", "PC-DARTS: partial channels K=4 and edge normalisation (Xu et al. 2020)",
       relaxation="softmax_beta", transforms=[Part("partial_channels", {"K": 4})],
       schedule=Schedule(**_PC),
       # NB201 settings of DrNAS' PC-DARTS run are unverified: DrNAS' NB201 base schedule.
       nb201=dict(batch_size=64, w_lr=0.025, w_lr_min=0.001)),
    _m("drnas", "DrNAS: Dirichlet relaxation with pathwise gradients (Chen et al. 2021)",
       relaxation="dirichlet",
       schedule=Schedule(epochs=50, w_lr=0.1, w_lr_min=0.0, a_lr=6e-4),
       nb201=dict(epochs=100, w_lr=0.025, w_lr_min=0.001, a_lr=3e-4)),
    _m("drnas-progressive", "DrNAS with progressive partial channels and op pruning",
       relaxation="dirichlet",
       transforms=[Part("progressive", {"K": [6, 4], "keep": [7, 4], "epochs": [25, 25],
                                        "warmup": 10})],
       schedule=Schedule(epochs=50, w_lr=0.1, w_lr_min=0.0, a_lr=6e-4),
       nb201=dict(epochs=100, w_lr=0.025, w_lr_min=0.001, a_lr=3e-4,
                  transforms=[Part("progressive", {"K": [4, 2], "keep": [5, 3],
                                                   "epochs": [50, 50], "warmup": 10})])),
    _m("rf-darts", "RF-DARTS: frozen random convolutions, only BN affine trained (Zhang et al. 2023)",
       transforms=[Part("random_features", {"trainable": ["bn_affine"]})], nb201=_NB201_DARTS),
    _m("rf-pcdarts", "RF-PCDARTS: PC-DARTS with random features",
       relaxation="softmax_beta",
       transforms=[Part("partial_channels", {"K": 4}),
                   Part("random_features", {"trainable": ["bn_affine"]})],
       schedule=Schedule(**_PC), nb201=dict(batch_size=64, w_lr=0.025, w_lr_min=0.001)),
    _m("idarts-nn", "iDARTS (Wang et al.): node normalisation + decorrelation discretisation",
       transforms=[Part("node_norm")], discretizer=Part("decorrelation", {"batches": 4}),
       nb201=_NB201_DARTS),
    _m("idarts-ift", "iDARTS (Zhang et al. 2021): stochastic implicit gradient, Neumann series",
       hypergradient=Part("neumann", {"K": 2}),
       schedule=Schedule(inner_steps=4),
       nb201=dict(epochs=30, w_lr=0.01, **_NB201_DARTS)),
    _m("amended-darts", "Amended-DARTS: the IFT term with H in place of H^-1 (Bi et al. 2019)",
       hypergradient=Part("amended", {"damping": 0.0}), nb201=_NB201_2ND),
]}


def get_method(name: str) -> MethodSpec:
    try:
        return METHODS[name]
    except KeyError:
        raise KeyError(f"unknown method '{name}' (known: {', '.join(METHODS)})") from None


def space_family(ir) -> str:
    """'nb201' for spaces derived per edge by argmax, 'darts' for top-k spaces."""
    rules = {ir.cell(g.cell).derive.kind for g in ir.groups}
    return "nb201" if rules == {"argmax"} else "darts"
