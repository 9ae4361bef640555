"""One design's time-dependent source term s(t), tabulated between breakpoints (numpy).

Evaluating the sources through the device code costs ~0.1-0.7 ms per call for one design (tens of
small torch ops), more than the rest of a linear circuit's time step; but one call evaluates any
number of times at once.  So s(t) is tabulated per segment between consecutive breakpoints on a
uniform grid, refined (all segments in one call per level) until linear (coarse grids) or cubic
interpolation reproduces direct evaluations at the midpoint and one off-centre point of every
interval to CHECK_RTOL of the row's largest value; a failed cubic check predicts the grid that passes from
the N^-4 error law.  The table keeps the grid and its midpoints, so the interpolation error in use is
about 16x below the checked one.  PULSE/PWL/DC segments are exact with one interval; a sine takes
~1000 points per period.  A segment that does not pass within the point budget is evaluated
directly at every call.

A source may take a value at a breakpoint itself that is neither side's limit (ngspice's PULSE with
pw + tr + tf > per reads V1 exactly at each period start, V2 on both sides).  So every segment is
tabulated on a grid shrunk by EDGE_INSET of its span at both ends (interpolation extrapolates over
that sliver), and the values exactly at the breakpoints are evaluated directly once and kept.
"""

from __future__ import annotations

import math
from bisect import bisect_right

import numpy as np
import torch

__all__ = ["SourceTable"]

CHECK_RTOL = 1e-10
CHECK_FRACTIONS = (0.5, 0.2763932022500210)  # check points per interval (the second irrational-ish)
MAX_POINTS = 1 << 18                          # table budget: rows of s(t) over all segments
EDGE_INSET = 1e-6                             # the grid's distance from a segment's ends, per span


def _cubic_weights(s: np.ndarray) -> np.ndarray:
    """Lagrange weights (..., 4) of nodes 0..3 at local coordinate s."""
    return np.stack([-(s - 1) * (s - 2) * (s - 3) / 6, s * (s - 2) * (s - 3) / 2,
                     -s * (s - 1) * (s - 3) / 2, s * (s - 1) * (s - 2) / 6], axis=-1)


def _interpolate(nodes: np.ndarray, frac: float) -> np.ndarray:
    """Values at fraction frac of every interval from nodes (S, N+1, n): linear below 4 intervals,
    else cubic on the 4 nodes around the interval."""
    N = nodes.shape[1] - 1
    if N < 4:
        return nodes[:, :-1] * (1 - frac) + nodes[:, 1:] * frac
    j = np.arange(N)
    j0 = np.clip(j - 1, 0, N - 4 + 1)
    w = _cubic_weights(j + frac - j0)                       # (N, 4)
    stencil = nodes[:, j0[:, None] + np.arange(4)]          # (S, N, 4, n)
    return np.einsum("jm,sjmn->sjn", w, stencil)


class SourceTable:
    """s(t) (n,) of one bound design's linear sources: tabulated, checked against direct evaluation."""

    def __init__(self, split, edges: list[float]):
        """split: a `SplitDAE` of one design; edges: 0, the breakpoints and tstop, increasing."""
        self._split = split
        self._const = split.s_const[0].numpy()
        self._edges = list(edges)
        self._timed = bool(split.timed)
        self._segments: list[tuple | None] = [None] * (len(edges) - 1)
        if self._timed:
            self._at_edges = self._direct(np.asarray(self._edges)) + self._const
            self._build()

    def serves(self, split, edges: list[float]) -> bool:
        """Whether this table is that of `split` over `edges` too (same timed groups, constant term
        and segments)."""
        return (list(edges) == self._edges and split.timed == self._split.timed
                and np.array_equal(split.s_const[0].numpy(), self._const))

    def _direct(self, times: np.ndarray) -> np.ndarray:
        """The timed groups' source term at many times in one call: (K, n)."""
        t = torch.from_numpy(np.ascontiguousarray(times, dtype=np.float64))
        x = torch.zeros(t.shape[0], self._split.bound.dae.size, dtype=torch.float64)
        with torch.no_grad():
            _, f = self._split.bound.evaluate(x, t, groups=self._split.timed)
        return f.numpy()

    def _build(self) -> None:
        lo = np.asarray(self._edges[:-1])
        span = np.asarray(self._edges[1:]) - lo
        lo, span = lo + EDGE_INSET * span, span * (1 - 2 * EDGE_INSET)
        todo = np.arange(lo.shape[0])
        scale = np.zeros(self._const.shape[0])
        N = 1
        while todo.size and todo.size * 3 * N <= MAX_POINTS:
            # one call per level: the grid's nodes and the check points of every interval
            # the midpoint (where a cubic's error peaks) and an off-centre point: a grid in step with
            # a sine's period would see zeros at the nodes and midpoints alike
            fractions = CHECK_FRACTIONS
            frac = np.concatenate([np.arange(N + 1)] + [np.arange(N) + f for f in fractions]) / N
            values = self._direct((lo[todo, None] + span[todo, None] * frac).reshape(-1))
            values = values.reshape(todo.size, frac.shape[0], -1)
            scale = np.maximum(scale, np.abs(values).max(axis=(0, 1)))
            nodes = values[:, :N + 1]
            err = np.zeros(todo.size)
            for k, f in enumerate(fractions):
                direct = values[:, N + 1 + k * N:N + 1 + (k + 1) * N]
                err = np.maximum(err, (np.abs(direct - _interpolate(nodes, f)) /
                                       np.maximum(scale, 1e-300)).max(axis=(1, 2)))
            ok = err <= CHECK_RTOL
            for row in np.nonzero(ok)[0]:
                seg = int(todo[row])
                finer = np.empty((2 * N + 1, nodes.shape[2]))
                finer[0::2], finer[1::2] = nodes[row], values[row, N + 1:2 * N + 1]  # grid and midpoints
                self._segments[seg] = (float(lo[seg]), 2 * N / float(span[seg]), 2 * N, finer + self._const,
                                       N >= 4)
            if N < 4:
                N = 4
            else:  # cubic: the error falls as N^-4; aim just below CHECK_RTOL with the worst segment
                need = (err[~ok].max() / CHECK_RTOL) ** 0.25 if (~ok).any() else 2.0
                N *= 2 ** max(1, math.ceil(math.log2(need)))
            todo = todo[~ok]
        # segments left in todo stay None: evaluated directly

    def __call__(self, t: float) -> np.ndarray:
        """s(t) (n,), t within [0, tstop]."""
        if not self._timed:
            return self._const
        k = min(max(bisect_right(self._edges, t) - 1, 0), len(self._segments) - 1)
        if t == self._edges[k] or t == self._edges[k + 1]:
            return self._at_edges[k if t == self._edges[k] else k + 1]
        seg = self._segments[k]
        if seg is None:
            return self._direct(np.array([t]))[0] + self._const
        lo, inv_h, N, values, cubic = seg
        pos = (t - lo) * inv_h
        j = min(max(int(pos), 0), N - 1)
        if not cubic:
            u = pos - j
            return np.dot((1 - u, u), values[j:j + 2])
        j0 = min(max(j - 1, 0), N - 3)
        s = pos - j0
        w = (-(s - 1) * (s - 2) * (s - 3) / 6, s * (s - 2) * (s - 3) / 2,
             -s * (s - 1) * (s - 3) / 2, s * (s - 1) * (s - 2) / 6)
        return np.dot(w, values[j0:j0 + 4])

    def many(self, times: list[float]) -> np.ndarray:
        """s at many increasing times (K, n); vectorised when they share one tabulated segment."""
        if not self._timed:
            return np.broadcast_to(self._const, (len(times), self._const.shape[0]))
        k = min(max(bisect_right(self._edges, times[0]) - 1, 0), len(self._segments) - 1)
        seg = self._segments[k]
        if seg is None or times[-1] > self._edges[k + 1]:
            return np.stack([self(t) for t in times])
        lo, inv_h, N, values, cubic = seg
        t = np.asarray(times)
        pos = (t - lo) * inv_h
        j = np.clip(pos.astype(np.int64), 0, N - 1)
        if not cubic:
            u = (pos - j)[:, None]
            out = values[j] * (1 - u) + values[j + 1] * u
        else:
            j0 = np.clip(j - 1, 0, N - 3)
            w = _cubic_weights(pos - j0)                                  # (K, 4)
            out = np.einsum("km,kmn->kn", w, values[j0[:, None] + np.arange(4)])
        out[t == self._edges[k]] = self._at_edges[k]
        out[t == self._edges[k + 1]] = self._at_edges[k + 1]
        return out

