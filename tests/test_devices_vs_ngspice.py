"""Every built-in device family against ngspice on small netlists (raw .cir files)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from circuits import load_circuit, run_ngspice, simulate
from circuits.measure import compare
from circuits.ngspice import ngspice_available

DATA = Path(__file__).parent / "data"
pytestmark = [pytest.mark.ngspice, pytest.mark.skipif(not ngspice_available(), reason="ngspice not installed")]


@pytest.mark.parametrize("name,outputs", [
    ("mixed.cir", ["v(a)", "v(k)", "v(m)", "v(f)", "v(g)", "i(l1)"]),   # D (CJO, TT), L, E, G, I, B
    ("follower.cir", ["v(s)", "v(o)", "i(vdd)"]),                       # MOSFET body effect, caps, LD
])
def test_netlist_matches_ngspice(name, outputs):
    circuit = load_circuit(DATA / name, outputs=outputs)
    ng = run_ngspice(circuit)
    ref = simulate(circuit, t=torch.tensor(ng.time.to_numpy().copy()), rtol=1e-6)
    nrmse = compare(ng, ref)
    assert nrmse["worst"] <= 1e-3, nrmse
