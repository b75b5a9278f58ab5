"""Routing spec strings: their grammar, parsed once, validated with a clear error.

``uniform``, ``zipf:S`` (S >= 0), ``lognormal:SIGMA`` (SIGMA >= 0, finite), ``probs:p0,p1,...``
(shares >= 0 with a positive sum) and ``trace:PATH[@LAYER]``. What each means as a distribution
of expert choices is :mod:`moesim.core.routing`; reading a trace file is
:func:`moesim.traces.io.load_trace`. Pure Python and numpy, like the rest of ``config``'s leaves.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from moesim.config.errors import ConfigError
from moesim.config.limits import MAX_EXPERTS, MAX_ROUTING_SKEW, limit_error


@dataclass(frozen=True)
class Routing:
    """A parsed routing spec. ``param`` is the Zipf exponent or log-normal sigma; ``values``
    explicit shares; ``path`` a trace file, with its ``@LAYER`` suffix if one was given."""

    kind: str
    param: float = 0.0
    values: tuple[float, ...] = ()
    path: str = ""

    @property
    def label(self) -> str:
        if self.kind in ("zipf", "lognormal"):
            return f"{self.kind}:{self.param:g}"
        if self.kind == "trace":
            return f"trace:{self.path}"
        if self.kind == "probs":
            return "probs:" + ",".join(f"{v:g}" for v in self.values)
        return self.kind


@lru_cache(maxsize=1024)
def parse_routing(spec: str) -> Routing:
    """Parse a routing spec string; a bad one is a ConfigError naming ``routing``."""
    text = str(spec).strip()
    kind, _, arg = text.partition(":")
    expected = ("expected 'uniform', 'zipf:S' (S >= 0), 'lognormal:SIGMA' (SIGMA >= 0), "
                "'probs:p0,p1,...' or 'trace:PATH[@LAYER]'")
    if kind == "uniform" and not arg:
        return Routing("uniform")
    if kind in ("zipf", "lognormal"):
        what = "Zipf exponent" if kind == "zipf" else "log-normal sigma"
        try:
            s = float(arg)
        except ValueError:
            raise ConfigError(f"bad {what} in '{text}'; {expected}", field="routing") from None
        if not 0 <= s <= MAX_ROUTING_SKEW:  # also refuses nan
            raise ConfigError(f"{what} must be >= 0 and finite, at most {MAX_ROUTING_SKEW:g} "
                              f"(limits.MAX_ROUTING_SKEW: beyond it shares underflow), got {s}",
                              field="routing")
        return Routing(kind, param=s)
    if kind == "probs":
        if arg.count(",") >= MAX_EXPERTS:
            raise ConfigError(limit_error("probs values", arg.count(",") + 1, MAX_EXPERTS,
                                          "MAX_EXPERTS"), field="routing")
        try:
            values = tuple(float(v) for v in arg.split(","))
        except ValueError:
            raise ConfigError(f"bad probabilities in '{text}'; {expected}", field="routing") from None
        if not all(0 <= v < np.inf for v in values) or not 0 < sum(values) < np.inf:
            raise ConfigError("probabilities must be finite and >= 0 with a positive, finite "
                              "sum", field="routing")
        return Routing("probs", values=values)
    if kind == "trace" and arg:
        return Routing("trace", path=arg)
    raise ConfigError(f"unknown routing '{text}'; {expected}", field="routing")
