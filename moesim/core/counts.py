"""Per-slot token counts as a distribution: ``X ~ Binomial(n, p)``, optionally capped at ``c``.

A token includes expert e among its top-k with probability ``q_e`` independently of the other
tokens, so the ``n`` tokens of a batch put ``X ~ Binomial(n, p)`` tokens on a slot with
``p = q_e * share``. What the hardware pays is a function of the count, not of its mean, so the
expectations are taken over the distribution with binomial tail sums (vectorised, exact):

- tail ``P(X > k) = I_p(k + 1, n - k)`` (regularised incomplete beta; real ``n`` allowed, as
  two-batch overlap halves odd batches);
- capacity excess ``E[(X - c)+] = n p P(Y >= c) - c P(X > c)``, ``Y ~ Binomial(n - 1, p)``
  (from ``x C(n, x) = n C(n - 1, x - 1)``), so a capped slot processes ``E[min(X, c)] =
  n p - E[(X - c)+]``;
- row tiles ``E[ceil(min(X, c) / t)] = sum_{j >= 0, j t < c} P(X > j t)``. Terms below
  ``mu - 8 sd`` are 1 and above ``mu + 8 sd`` are 0, so only the few tiles inside the window are
  evaluated. When ``sd >= t`` the count's position inside its tile is uniform to within
  ``exp(-2 pi^2 sd^2 / t^2) < 3e-9`` (Poisson summation), so ``E[ceil(X / t)] = (mu + (t -
  1) / 2) / t`` there, the capped share handled as below.

Sources: the binomial tail as an incomplete beta (Abramowitz & Stegun 26.5.24); capacity as in
GShard (Lepikhin et al. 2020) and Switch Transformer (Fedus et al. 2021, sec. 2.2).
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace

import numpy as np
from scipy.special import betainc

#: Half-width of the evaluated window, in standard deviations.
WINDOW_SD = 8.0


def tail(k, n, p) -> np.ndarray:
    """``P(X > k)`` for ``X ~ Binomial(n, p)``, integer ``k``, real ``n >= 0``."""
    k, n, p = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (k, n, p)))
    inside = (k >= 0) & (k < n - 1e-9) & (p > 0)
    out = np.where(k < 0, 1.0, 0.0)
    # k = 0 (the first row tile of every cold slot): P(X > 0) = 1 - (1 - p)^n in closed form
    first = inside & (k == 0)
    with np.errstate(divide="ignore"):  # p = 1: log1p(-1) = -inf, and P(X > 0) = 1
        out[first] = -np.expm1(n[first] * np.log1p(-np.clip(p[first], 0.0, 1.0)))
    rest = inside & ~first
    out[rest] = betainc(k[rest] + 1.0, n[rest] - k[rest], np.clip(p[rest], 0.0, 1.0))
    return out


def expected_excess(n, p, cap) -> np.ndarray:
    """``E[(X - cap)+]`` for ``X ~ Binomial(n, p)`` and integer ``cap >= 0``, exactly."""
    n, p, cap = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (n, p, cap)))
    at_least = np.where(cap > 0, tail(cap - 1.0, n - 1.0, p), 1.0)  # P(Y >= cap)
    return np.maximum(n * p * at_least - cap * tail(cap, n, p), 0.0)


@dataclass(frozen=True)
class SlotCounts:
    """Counts of every slot ``[rows, slots]``: ``min(X, cap)``, ``X ~ Binomial(trials, prob)``.

    ``trials`` ``[rows, 1]``; ``prob`` ``[rows, slots]``; ``cap`` ``[rows, slots]`` integer
    capacities or None (dropless).
    """

    trials: np.ndarray
    prob: np.ndarray
    cap: np.ndarray | None = None

    def capped(self, cap: np.ndarray) -> "SlotCounts":
        return replace(self, cap=np.floor(np.broadcast_to(cap, self.prob.shape)))

    @property
    def uncapped_mean(self) -> np.ndarray:
        return self.trials * self.prob

    @property
    def mean(self) -> np.ndarray:
        """``E[min(X, cap)]``: the tokens each slot processes."""
        if self.cap is None:
            return self.uncapped_mean
        return self.uncapped_mean - expected_excess(self.trials, self.prob, self.cap)

    def row_tiles(self, tile_m: int) -> np.ndarray:
        """``E[ceil(min(X, cap) / tile_m)]`` per slot ``[rows, slots]`` (evaluated once per
        distinct row: sweeps repeat the same batch size across many rows)."""
        shape = self.prob.shape
        cap = np.broadcast_to(np.inf, shape) if self.cap is None else self.cap
        n_full = np.broadcast_to(self.trials, shape)
        # distinct rows by batch size first (a sweep's usual axis: rows of one batch size share
        # their probabilities); checked, and by every column where that does not hold
        rows, row_of = _distinct_rows(n_full[:, :1])
        if rows.size == shape[0]:  # every batch size once: nothing to share
            rows = row_of = np.arange(shape[0])
        elif not (_same_as_first(self.prob, rows, row_of) and _same_as_first(cap, rows, row_of)):
            rows, row_of = _distinct_rows(n_full, self.prob, cap)
        n, p, c = (a[rows] for a in (n_full, self.prob, cap))
        if _same_across_slots(p) and _same_across_slots(c):  # uniform routing: one column
            tiles = _memo_row_tiles(*(np.ascontiguousarray(a[:, 0]) for a in (n, p, c)), tile_m)
            return np.broadcast_to(tiles[row_of, None], self.prob.shape)
        flat = [a.reshape(-1, 1) for a in (n, p, c)]
        first, inverse = _distinct_rows(*flat)  # then once per distinct slot distribution
        tiles = _memo_row_tiles(*(np.ascontiguousarray(a[first, 0]) for a in flat), tile_m)
        return tiles[inverse].reshape(rows.size, -1)[row_of]


def _same_across_slots(a: np.ndarray) -> bool:
    """Every row of ``[rows, slots]`` holds one value (distinct rows are then distinct slot
    distributions, and one column evaluates them all)."""
    return bool((a == a[:, :1]).all())


def _same_as_first(a: np.ndarray, first: np.ndarray, row_of: np.ndarray) -> bool:
    """Every row equals the first row of its group (``first[row_of]``)."""
    return bool((a == a[first][row_of]).all())


def _distinct_rows(*arrays: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index of the first of each distinct row, distinct row of every row) over ``[rows, *]``;
    a few columns are sorted as numbers (``np.lexsort``), many as row bytes."""
    stacked = np.ascontiguousarray(np.concatenate(arrays, axis=1))
    if stacked.shape[1] > 8:
        return _distinct_bytes(stacked)
    order = np.lexsort(stacked.T[::-1])
    ordered = stacked[order]
    new = np.ones(len(order), dtype=bool)
    new[1:] = (ordered[1:] != ordered[:-1]).any(axis=1)
    inverse = np.empty(len(order), dtype=np.intp)
    inverse[order] = np.cumsum(new) - 1
    return order[new], inverse


def _distinct_bytes(stacked: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keys = stacked.view(np.dtype((np.void, stacked.dtype.itemsize * stacked.shape[1]))).ravel()
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    return first, inverse.ravel()


#: Row tiles of recent slot distributions, keyed by their bytes: a sweep over hardware profiles
#: with the same tile height (every 128-row GPU profile) asks for the same ones per profile.
#: A pure function's memo (bounded; values are read-only copies), not shared state.
_TILE_MEMO: "OrderedDict[bytes, np.ndarray]" = OrderedDict()
_TILE_MEMO_BYTES = 64 << 20  # ~8M slot distributions: a 100k-row sweep's worth
_TILE_LOCK = threading.Lock()


def _memo_row_tiles(n, p, cap, tile_m: int) -> np.ndarray:
    """:func:`_row_tiles`, evaluated once per distinct ``(n, p, cap, tile_m)`` arrays."""
    key = hashlib.blake2b(b"".join((n.tobytes(), p.tobytes(), cap.tobytes(),
                                    str(int(tile_m)).encode())), digest_size=20).digest()
    with _TILE_LOCK:  # predict_many evaluates large groups on threads
        hit = _TILE_MEMO.get(key)
        if hit is not None:
            _TILE_MEMO.move_to_end(key)
            return hit
    out = _row_tiles(n, p, cap, tile_m)
    out.flags.writeable = False
    with _TILE_LOCK:
        _TILE_MEMO[key] = out
        held = sum(v.nbytes for v in _TILE_MEMO.values())
        while _TILE_MEMO and held > _TILE_MEMO_BYTES:  # oldest out first
            held -= _TILE_MEMO.popitem(last=False)[1].nbytes
    return out


def _row_tiles(n, p, cap, tile_m: int) -> np.ndarray:
    """``E[ceil(min(X, cap) / tile_m)]`` for arrays of one shape."""
    mu = n * p
    sd = np.sqrt(mu * (1.0 - np.minimum(p, 1.0)))
    capped_tiles = np.ceil(cap / tile_m - 1e-9)  # j with j * t < cap
    smooth = sd >= tile_m
    out = np.empty(p.shape)
    if smooth.any():
        out[smooth] = _smooth_tiles(n[smooth], p[smooth], mu[smooth], cap[smooth],
                                    capped_tiles[smooth], tile_m)
    exact = ~smooth
    if exact.any():
        out[exact] = _window_tiles(n[exact], p[exact], mu[exact], sd[exact], cap[exact],
                                   capped_tiles[exact], tile_m)
    return out


def _window_tiles(n, p, mu, sd, cap, capped_tiles, tile_m: int) -> np.ndarray:
    """Tail sum over the tiles inside ``mu +- WINDOW_SD * sd`` (flat arrays)."""
    first = np.floor(np.maximum(mu - WINDOW_SD * sd, 0.0) / tile_m)
    last = np.ceil((mu + WINDOW_SD * sd) / tile_m)
    width = int(np.max(last - first, initial=0)) + 1
    j = first[:, None] + np.arange(width)[None, :]
    valid = (j <= last[:, None]) & (j < capped_tiles[:, None])
    terms = np.zeros(j.shape)
    rows = np.nonzero(valid)[0]
    terms[valid] = tail(j[valid] * tile_m, n[rows], p[rows])
    return np.minimum(first, capped_tiles) + terms.sum(axis=1)


def _smooth_tiles(n, p, mu, cap, capped_tiles, tile_m: int) -> np.ndarray:
    """``E[ceil(min(X, c) / t)]`` when ``sd >= t``: ``(E[X; X <= c] + (t - 1)/2 P(X <= c)) / t
    + ceil(c / t) P(X > c)``."""
    finite = np.isfinite(cap)
    c = np.where(finite, cap, 0.0)
    over = np.where(finite, tail(c, n, p), 0.0)
    excess = np.where(finite, expected_excess(n, p, c), 0.0)
    below_mean = mu - excess - c * over  # E[X; X <= c]
    tiles_over = np.where(finite, capped_tiles, 0.0) * over
    return (below_mean + 0.5 * (tile_m - 1) * (1.0 - over)) / tile_m + tiles_over
