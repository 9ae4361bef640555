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
