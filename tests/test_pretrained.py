"""Shipped surrogates load and reproduce the accuracy recorded when they were trained."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from circuits.simulation import simulate_batch
from surrogate.api import load_surrogate
from surrogate.module import nrmse_table

PRETRAINED = sorted((Path(__file__).resolve().parent.parent / "pretrained").glob("*.pt"))


@pytest.mark.parametrize("path", PRETRAINED, ids=lambda p: p.stem)
def test_pretrained_matches_recorded_worst_design(path):
    model = load_surrogate(path)
    m = model.metrics
    c = model.circuit
    P = c.space.vector(m["worst_design"]).unsqueeze(0)
    t = torch.linspace(0.0, c.tstop, 301, dtype=torch.float64)
    with torch.no_grad():
        _, ref = simulate_batch(c, P, t=t, rtol=1e-5)
        y = model.predict_batch(t, P)
    worst = float(nrmse_table(y, ref).max())
    assert worst == pytest.approx(m["nrmse_worst_overall"], rel=1e-3, abs=1e-6)


def test_shipped_feram_writes_only_above_the_coercive_threshold():
    """At tfe = 11.6 nm the LK film's coercive voltage is ~1.29 V: the reference cell does not switch
    at vbl 1.2 and 1.3 V and switches 1.04 ns after the pulse at 1.5 V.  The shipped surrogate keeps
    both low cells unswitched (an earlier 4-window file switched them at 4.5 ns) and times the write within
    2 % (measured 0.4 %)."""
    from optimize.measurements import measure_sampled
    from optimize.tasks import load_task

    model = load_surrogate(Path(__file__).resolve().parent.parent / "pretrained" / "feram.pt")
    meas = load_task("feram_switch").objective.measurement
    P = torch.tensor([[11.6e-9, 1e-13, v] for v in (1.2, 1.3, 1.5)], dtype=torch.float64)
    t = torch.linspace(0.0, 6.5e-9, 651, dtype=torch.float64)
    with torch.no_grad():
        y = model.predict_batch(t, P, outputs=meas.signals())
        _, ref = simulate_batch(model.circuit, P, t=t, outputs=meas.signals(), rtol=1e-6)
    s, s_ref = measure_sampled(meas, t, y), measure_sampled(meas, t, ref)
    assert bool(s_ref[:2].isnan().all()) and bool(s[:2].isnan().all())  # no write at 1.2 and 1.3 V
    assert float(y[:2, :, 0].max()) < 0.0 and float(ref[:2, :, 0].max()) < 0.0
    assert abs(float(s[2] / s_ref[2]) - 1.0) < 0.02


def test_shipped_amp_has_no_bad_corner_over_many_designs():
    """An amp.pt trained with L-BFGS on 64 designs x 32 times met 1.2 % on the bench's 33 designs
    but reached 2.2 % worst over these 128 (p95 1.1 %): L-BFGS overfitted its 64 designs.  The same
    2048 points on 512 designs x 4 times: worst 1.0 %, p95 0.85 % (seed 1 of that config: 1.1 %, 0.9 %)."""
    model = load_surrogate(Path(__file__).resolve().parent.parent / "pretrained" / "amp.pt")
    c = model.circuit
    P = c.space.sample_uniform(128, torch.Generator().manual_seed(7))
    t = torch.linspace(0.0, c.tstop, 301, dtype=torch.float64)
    with torch.no_grad():
        _, ref = simulate_batch(c, P, t=t, rtol=1e-5)
        y = model.predict_batch(t, P)
    worst = nrmse_table(y, ref).amax(dim=1)
    assert float(worst.max()) < 0.015
    assert float(torch.quantile(worst, 0.95)) < 0.01
