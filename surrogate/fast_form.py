"""`FastForm`: a separable stand-in for a trained windowed PINN, y(t, p) = sum_r a_r(p) b_r(τ) per time
segment, evaluated for many designs by one matrix product per segment.

a(p) is a Legendre polynomial of the unit-cube design (one shared feature matrix, one weight matrix);
b_r(τ) are POD time modes stored as Chebyshev series on each segment (window edges and source corners,
so a kink in a source never falls inside a series). Built by `surrogate.distill.build_fast_form`.
"""

from __future__ import annotations

import hashlib
import itertools
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from circuits.params import ParamSpace

__all__ = ["FastForm", "chebyshev_matrix", "legendre_powers", "net_fingerprint"]

CHUNK = 8192  # designs per pass without autograd


def legendre_powers(dim: int, degree: int) -> Tensor:
    """Multi-indices (M, dim) of total degree <= degree, the constant first."""
    powers = [e for e in itertools.product(range(degree + 1), repeat=dim) if sum(e) <= degree]
    powers.sort(key=sum)
    return torch.tensor(powers, dtype=torch.long).reshape(len(powers), dim)


def legendre_features(u: Tensor, powers: Tensor) -> Tensor:
    """(B, M) products of Legendre polynomials P_k(2u - 1), one column per multi-index of `powers`."""
    B, dim = u.shape[0], powers.shape[1]
    if dim == 0:  # a one-design (fixed-parameter) form: the constant only
        return torch.ones(B, powers.shape[0], dtype=u.dtype)
    degree = int(powers.max()) if powers.numel() else 0
    x = (2 * u - 1).T.contiguous()  # (dim, B): each gather below copies whole contiguous rows
    table = [torch.ones_like(x), x]  # Bonnet's recurrence
    for k in range(1, degree):
        table.append(((2 * k + 1) * x * table[k] - k * table[k - 1]) / (k + 1))
    table = torch.stack(table[: degree + 1], dim=1)  # (dim, degree + 1, B)
    feats = table[0].index_select(0, powers[:, 0])  # (M, B)
    for i in range(1, dim):
        feats = feats * table[i].index_select(0, powers[:, i])
    return feats.T


def chebyshev_matrix(x: Tensor, n: int) -> Tensor:
    """(T, n) Chebyshev polynomials T_0..T_{n-1} at x (T,) in [-1, 1]."""
    cols = [torch.ones_like(x), x]
    for _ in range(2, n):
        cols.append(2 * x * cols[-1] - cols[-2])
    return torch.stack(cols[:n], dim=1)


def net_fingerprint(nets: nn.Module) -> str:
    """SHA-1 of a model's network weights: a fast form belongs to exactly these weights."""
    h = hashlib.sha1()
    for name, value in sorted(nets.state_dict().items()):
        h.update(name.encode())
        h.update(value.detach().to(torch.float64).contiguous().numpy().tobytes())
    return h.hexdigest()


class FastForm:
    """y(t, p) on segment s: [F(u) W]_{rows_s} @ (Chebyshev(τ) C_s), u the unit-cube design.

    edges (S + 1,) s; rows (S + 1,) offsets of each segment's coefficient columns (its mean first,
    then its R_s modes); weight (M, rows[-1]) over the features `powers` (M, dim); modes (rows[-1], J, n_out)
    Chebyshev coefficients of each mode on its segment; outputs: the n_out names it predicts.
    Not an nn.Module on purpose: it must stay out of the model's parameters and state dict.
    """

    def __init__(self, edges: Tensor, rows: Tensor, powers: Tensor, weight: Tensor, modes: Tensor,
                 outputs: Sequence[str], fingerprint: str, metrics: dict[str, Any] | None = None):
        self.edges = edges.to(torch.float64)
        self.rows = rows.to(torch.long)
        self.powers = powers.to(torch.long)
        self.weight = weight.to(torch.float64)
        self.modes = modes.to(torch.float64)
        self.outputs = list(outputs)
        self.fingerprint = fingerprint
        self.metrics = dict(metrics or {})
        self._f32 = (self.weight.float(), self.modes.float())

    @property
    def segments(self) -> int:
        """Number of time segments."""
        return len(self.edges) - 1

    def covers(self, outputs: Sequence[str] | None) -> bool:
        """Whether every requested output (None: the circuit's) is one this form predicts."""
        return outputs is None or all(o in self.outputs for o in outputs)

    def coefficients(self, P: Tensor, space: ParamSpace, dtype: torch.dtype = torch.float64) -> Tensor:
        """a(p) (B, rows[-1]) for designs P (B, P); differentiable in P."""
        weight = self.weight if dtype == torch.float64 else self._f32[0]
        u = space.to_unit(P.to(torch.float64)).to(dtype)
        return legendre_features(u, self.powers) @ weight

    def __call__(self, t: Tensor, P: Tensor, space: ParamSpace, outputs: Sequence[str] | None = None) -> Tensor:
        """(B, T, n_out) at times t (T,) for designs P (B, P), float64; float32 arithmetic without grad."""
        exact = torch.is_grad_enabled() and P.requires_grad
        if not exact and P.shape[0] > CHUNK:  # bounded intermediates (features, products) for huge batches
            return torch.cat([self(t, chunk, space, outputs) for chunk in P.split(CHUNK)])
        dtype = torch.float64 if exact else torch.float32
        modes = self.modes if exact else self._f32[1]
        if outputs is not None and list(outputs) != self.outputs:
            modes = modes[:, :, [self.outputs.index(o) for o in outputs]]
        A = self.coefficients(P, space, dtype)
        t = torch.as_tensor(t, dtype=torch.float64)
        ordered = bool((t[1:] >= t[:-1]).all()) if len(t) > 1 else True
        perm = None if ordered else torch.argsort(t)
        ts = t if perm is None else t[perm]
        # a time on an inner edge belongs to the later segment, as a time on a window edge does
        seg = torch.bucketize(ts, self.edges[1:-1], right=True)
        lo, hi = self.edges[seg], self.edges[seg + 1]
        basis = chebyshev_matrix((2 * (ts - lo) / (hi - lo) - 1).to(dtype), modes.shape[1])  # (T, J)
        counts = torch.bincount(seg, minlength=self.segments).tolist()
        B, n = A.shape[0], modes.shape[2]
        # float64 result filled segment by segment (a transposing copy of it cost more than the products)
        y = torch.empty(B, len(ts) * n, dtype=torch.float64) if not exact else None
        parts, start = [], 0
        for s, count in enumerate(counts):
            if not count:
                continue
            r0, r1 = int(self.rows[s]), int(self.rows[s + 1])
            shapes = torch.einsum("tj,rjn->rtn", basis[start:start + count], modes[r0:r1])  # (R+1, T_s, n)
            part = A[:, r0:r1] @ shapes.reshape(r1 - r0, -1)  # (B, T_s·n)
            if y is None:
                parts.append(part)
            else:
                y[:, start * n:(start + count) * n] = part
            start += count
        y = (torch.cat(parts, dim=1) if y is None else y).view(B, len(ts), n)
        if perm is not None:
            y = y[:, torch.argsort(perm)]
        return y

    def to_blob(self) -> dict[str, Any]:
        """Tensors and plain values only (a surrogate file is read with weights_only=True)."""
        return {"edges": self.edges, "rows": self.rows, "powers": self.powers, "weight": self.weight,
                "modes": self.modes, "outputs": list(self.outputs), "fingerprint": self.fingerprint,
                "metrics": dict(self.metrics)}

    @classmethod
    def from_blob(cls, blob: dict[str, Any]) -> "FastForm":
        """The form `to_blob` wrote; KeyError/TypeError/ValueError if it is damaged."""
        form = cls(blob["edges"], blob["rows"], blob["powers"], blob["weight"], blob["modes"],
                   blob["outputs"], str(blob["fingerprint"]), blob.get("metrics"))
        R = int(form.rows[-1])
        if (form.weight.shape != (form.powers.shape[0], R) or form.modes.shape[0] != R
                or form.modes.shape[2] != len(form.outputs) or len(form.rows) != len(form.edges)):
            raise ValueError("fast form: shapes of its weight, modes and rows disagree")
        return form
