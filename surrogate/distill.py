"""Distil a trained windowed PINN into a `FastForm`, using only the PINN's own outputs.

Per time segment (window edges and source corners): sample the PINN at Chebyshev-Gauss nodes for
Sobol designs, keep the POD modes that reproduce every sampled waveform within `proj_tol` of the
output's swing, and fit the mode coefficients with a Legendre polynomial of the design by weighted
least squares. The polynomial degree is the lowest whose worst NRMSE against the PINN, on held-out
uniform designs and a uniform time grid, is within `tol`; failing that, the best one tried.
"""

from __future__ import annotations

import math
import time
from typing import Callable

import torch
from torch import Tensor

from surrogate.fast_form import FastForm, chebyshev_matrix, legendre_features, legendre_powers, net_fingerprint
from surrogate.held_out import nrmse_table
from surrogate.models import Surrogate, SurrogateError

__all__ = ["build_fast_form", "segment_edges"]

#: a design whose output moves this little (share of the output's swing over all designs) is
#: weighted as if it moved this much: NRMSE divides by each design's own peak-to-peak
MIN_RANGE_SHARE = 0.01


def segment_edges(model: Surrogate) -> Tensor:
    """Window edges and the source corners inside windows (S + 1,) s."""
    tstop = model.circuit.tstop
    edges = {float(e) for e in model.edges} | {float(b) for b in model._corners if 0.0 < b < tstop}
    return torch.tensor(sorted(edges), dtype=torch.float64)


def _nodes(edges: Tensor, J: int) -> Tensor:
    """Chebyshev-Gauss nodes (S·J,): J per segment, none on an edge (algebraic outputs jump there)."""
    x = torch.cos(math.pi * (torch.arange(J, dtype=torch.float64) + 0.5) / J).flip(0)
    return torch.cat([a + (b - a) * (x + 1) / 2 for a, b in zip(edges[:-1].tolist(), edges[1:].tolist())])


def _pod(Y: Tensor, proj_tol: float) -> tuple[Tensor, Tensor, Tensor]:
    """(mean (K,), modes (R, K), coefficients (N, R)) of snapshots Y (N, K) in swing units: the fewest
    modes that reproduce every snapshot within proj_tol."""
    mean = Y.mean(dim=0)
    Yc = Y - mean
    _, _, Vt = torch.linalg.svd(Yc, full_matrices=False)
    for R in range(1, Vt.shape[0] + 1):
        A = Yc @ Vt[:R].T
        if float((A @ Vt[:R] - Yc).abs().max()) <= proj_tol:
            break
    return mean, Vt[:R], A


def _important(form: FastForm, share: float) -> Tensor:
    """The multi-indices whose weights, times their Legendre product's RMS over the unit cube, exceed
    `share` of the largest non-constant one (the constant always stays)."""
    rms = (1.0 / (2 * form.powers.to(torch.float64) + 1)).prod(dim=1).sqrt()
    size = form.weight.norm(dim=1) * rms
    size[0] = math.inf
    return form.powers[size >= share * size[1:].max()] if len(size) > 1 else form.powers


def build_fast_form(model: Surrogate, designs: int = 8192, nodes: int = 32, tol: float = 1e-3,
                    proj_tol: float = 3e-5, max_features: int = 1000, held_out: int = 256, seed: int = 0,
                    log: Callable[[str], None] = print) -> FastForm:
    """A `FastForm` of `model`'s default outputs, checked on `held_out` designs it was not fitted on."""
    if model.warped_time:
        raise SurrogateError(f"{model.kind}: no fast form for warped-time (limit-cycle) models yet")
    t_start = time.perf_counter()
    circuit, space = model.circuit, model.circuit.space
    fixed = bool(model.metrics.get("fixed_params")) or space.dim == 0
    outputs = list(circuit.outputs)
    edges = segment_edges(model)
    S, J = len(edges) - 1, int(nodes)
    P_fit = space.nominal_vector().unsqueeze(0) if fixed else space.sample_sobol(designs, seed=seed, margin=0.05)
    with torch.no_grad():
        Y = model.predict_batch(_nodes(edges, J), P_fit, outputs, exact=True)  # (N, S·J, n)
    N, n = P_fit.shape[0], len(outputs)
    swing = (Y.amax(dim=(0, 1)) - Y.amin(dim=(0, 1))).clamp(min=1e-12)
    # weighted rows: each design's fit error counts relative to its own peak-to-peak
    share = ((Y.amax(dim=1) - Y.amin(dim=1)) / swing).amin(dim=1).clamp(min=MIN_RANGE_SHARE)
    weight = (1.0 / share).unsqueeze(1)
    to_coef = torch.linalg.inv(chebyshev_matrix(torch.cos(math.pi * (torch.arange(J, dtype=torch.float64) + 0.5)
                                                          / J).flip(0), J))  # node values -> series
    means, modes, coefs, rows = [], [], [], [0]
    for s in range(S):
        Ys = (Y[:, s * J:(s + 1) * J] / swing).reshape(N, J * n)
        mean, V, A = _pod(Ys, proj_tol)
        shapes = torch.cat([mean.unsqueeze(0), V]).view(-1, J, n) * swing  # node values, volts/amps
        modes.append(torch.einsum("kj,rjn->rkn", to_coef, shapes))
        coefs.append(A)
        rows.append(rows[-1] + 1 + V.shape[0])
    ranks = [rows[s + 1] - rows[s] - 1 for s in range(S)]
    log(f"fast form: {S} segments x {J} Chebyshev nodes, {N} designs, POD ranks {ranks} "
        f"(sampling + POD {time.perf_counter() - t_start:.1f} s)")

    P_val = space.nominal_vector().unsqueeze(0) if fixed else \
        space.sample_uniform(held_out, torch.Generator().manual_seed(10_000 + seed))
    t_val = torch.linspace(0.0, circuit.tstop, 1001, dtype=torch.float64)
    with torch.no_grad():
        y_pinn = model.predict_batch(t_val, P_val, outputs, exact=True)
    fingerprint = net_fingerprint(model.nets)
    modes_all = torch.cat(modes)

    def fit(powers: Tensor) -> FastForm:
        F = legendre_features(space.to_unit(P_fit), powers)
        W = torch.zeros(powers.shape[0], rows[-1], dtype=torch.float64)
        for s in range(S):
            W[0, rows[s]] = 1.0  # the segment mean's coefficient: the constant feature
            W[:, rows[s] + 1:rows[s + 1]] = torch.linalg.lstsq(F * weight, coefs[s] * weight).solution
        return FastForm(edges, torch.tensor(rows), powers, W, modes_all, outputs, fingerprint)

    def check(form: FastForm, degree: int) -> tuple[float, FastForm]:
        with torch.no_grad():
            err = nrmse_table(form(t_val, P_val, space), y_pinn).amax(dim=1)
        worst, median = float(err.max()), float(err.median())
        log(f"  degree {degree:2d}: {form.powers.shape[0]:4d} features, NRMSE vs PINN on {len(P_val)} held-out "
            f"designs worst {worst:.2e} median {median:.2e}")
        form.metrics = {"degree": degree, "features": int(form.powers.shape[0]), "nodes": J, "ranks": ranks,
                        "designs": N, "held_out": int(len(P_val)), "tol": tol,
                        "nrmse_vs_pinn_worst": worst, "nrmse_vs_pinn_median": median}
        return worst, form

    best: tuple[float, FastForm] | None = None
    for degree in range(0 if fixed else 2, 64):
        powers = legendre_powers(0 if fixed else space.dim, degree)
        if best is not None and (powers.shape[0] > max_features or 6 * powers.shape[0] > N):
            break
        worst, form = check(fit(powers), degree)
        if best is None or worst < best[0]:
            best = (worst, form)
        if worst <= tol or fixed:
            break
    assert best is not None
    # drop the features that carry least of the map (the cost is designs x features x modes), keeping
    # the sparsest refit that still meets tol (or stays within 10 % of the full fit when that misses it)
    full_worst, form = best
    accept = max(tol, 1.1 * full_worst)
    for share in (1e-3, 3e-4, 2e-4, 1e-4, 5e-5, 3e-5):
        powers = _important(form, share)
        if powers.shape[0] >= form.powers.shape[0]:
            break
        worst, pruned = check(fit(powers), int(form.metrics["degree"]))
        if worst <= accept:
            best = (worst, pruned)
            break
    form = best[1]
    form.metrics["build_s"] = time.perf_counter() - t_start
    return form
