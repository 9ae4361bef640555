"""Each shipped circuit: our reference solver against ngspice (the outside truth)."""

from __future__ import annotations

import pytest

from circuits import load_circuit
from circuits.compare import reference_vs_ngspice
from circuits.measure import cross_time, series
from circuits.ngspice import ngspice_available

pytestmark = [pytest.mark.ngspice,
              pytest.mark.skipif(not ngspice_available(), reason="ngspice not installed")]


@pytest.mark.parametrize("name", ["rc", "amp", "ring5", "feram"])
def test_nominal_design_matches_ngspice(name):
    circuit = load_circuit(name)
    table, metrics = reference_vs_ngspice(circuit, rtol=1e-5)
    assert metrics["nrmse"]["worst"] <= 1e-3, metrics["nrmse"]
    if name == "ring5":
        assert max(metrics["period_rel_error"].values()) <= 5e-4, metrics["period_rel_error"]
    if name == "feram":  # the polarisation switches up near 2.5 ns and back near 10.4 ns
        ref = table[table.engine == "reference"]
        t, p = series(ref, "n1.p")
        up = float(cross_time(t, p, 0.0, "rise"))
        down = float(cross_time(t, p, 0.0, "fall"))
        assert 2.2e-9 < up < 2.8e-9 and 10.1e-9 < down < 10.7e-9, (up, down)


def test_random_amp_design_matches_ngspice():
    circuit = load_circuit("amp")
    design = circuit.space.to_dict(circuit.space.sample_sobol(1, seed=7)[0])
    _, metrics = reference_vs_ngspice(circuit, design, rtol=1e-5)
    assert metrics["nrmse"]["worst"] <= 1e-3, (design, metrics["nrmse"])
