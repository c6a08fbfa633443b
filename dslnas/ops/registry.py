"""Op registry: name -> factory(C_in, C_out, stride, affine, track) -> nn.Module.

One table for built-in and user ops, so the DSL can accept any registered name
and the supernet can build every edge through a single entry point (timm style).

``kind`` is metadata the supernet reads, not behaviour:

- ``"param"``: an ordinary op (convolutions, anything with weights).
- ``"pool"``: the DARTS search supernet appends BN(affine=False) after it (ref 1.2).
- ``"identity"``: may build an ``Identity``; the DARTS evaluation network skips
  drop-path for it. At stride 2 / C_in != C_out ``skip_connect`` builds a
  FactorizedReduce instead, which DARTS *does* drop-path, so a supernet should
  test ``isinstance(module, Identity)`` as well as the kind.
- ``"zero"``: the ``none`` op (excluded by DARTS-style derivation).
- ``"noise"``: RobustDARTS S4 ``noise`` op (parameter-free, input-independent).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

OpFactory = Callable[[int, int, int, bool, bool], nn.Module]

OP_KINDS = ("param", "pool", "identity", "zero", "noise")


@dataclass(frozen=True)
class OpEntry:
    name: str
    factory: OpFactory
    kind: str


_REGISTRY: dict[str, OpEntry] = {}


def register_op(name: str, *, kind: str = "param", override: bool = False):
    """Decorator registering ``factory(C_in, C_out, stride, affine, track)`` under ``name``.

    Re-registering a name is an error unless ``override=True``: silently
    replacing a built-in op would change a search space without notice.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"op name must be a non-empty string, got {name!r}")
    if kind not in OP_KINDS:
        raise ValueError(f"unknown op kind {kind!r} for {name!r}; expected one of {OP_KINDS}")

    def decorator(factory: OpFactory) -> OpFactory:
        if not callable(factory):
            raise TypeError(f"factory for op {name!r} is not callable")
        if name in _REGISTRY and not override:
            raise ValueError(f"op {name!r} is already registered; pass override=True to replace it")
        _REGISTRY[name] = OpEntry(name, factory, kind)
        return factory

    return decorator


def unregister_op(name: str) -> None:
    """Remove a registered op (mainly for tests that register temporary ops)."""
    _entry(name)
    del _REGISTRY[name]


def _entry(name: str) -> OpEntry:
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise KeyError(f"unknown op {name!r}; known ops: {known}") from None


def create_op(name: str, C_in: int, C_out: int, stride: int,
              affine: bool = True, track: bool = True) -> nn.Module:
    """Build op ``name`` mapping C_in channels to C_out channels at ``stride``."""
    module = _entry(name).factory(C_in, C_out, stride, affine, track)
    if not isinstance(module, nn.Module):
        raise TypeError(f"factory of op {name!r} returned {type(module).__name__}, not nn.Module")
    return module


def op_kind(name: str) -> str:
    return _entry(name).kind


def is_registered(name: str) -> bool:
    return name in _REGISTRY


def available_ops() -> list[str]:
    """Registered names in registration order (built-ins first)."""
    return list(_REGISTRY)
