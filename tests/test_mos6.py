"""MOSFET level 6 (ngspice's mos6, Sakurai-Newton n-th power law): its own device and parameter set,
the analytic conductances, and I-V sweeps and inverter chains vs ngspice (its one-line rejections
are in tests/test_mosfet.py with the other levels')."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from circuits import load_circuit
from circuits.ngspice import ngspice_available
from tests.netlist_helpers import MEYER_NGSPICE_OPTIONS, nrmse_vs_ngspice, parse_body

DATA = Path(__file__).parent / "data"


def test_level_6_cards_get_the_mos6_device_with_meyer_states_only_with_tox() -> None:
    from circuits.dae import assemble
    circuit = load_circuit(DATA / "mos6_inv.cir", outputs=["v(b2)"])
    dae = assemble(circuit)
    assert "Mos6" in {type(g.device).__name__ for g in dae.groups}
    assert {"mn1.dvgs", "mp4.dvgb"} <= set(dae.state_names)
    # VT0 is VTO; NVTH and PS are read (never used by mos6load.c)
    nl = parse_body(".model n nmos(level=6 vt0=0.5 lambda0=0.01 nvth=0.5 ps=0.1)\nM1 d g 0 0 n\nR1 d g 1\n")
    assert nl.models["n"].params["vto"].value() == 0.5


def test_analytic_conductances_are_the_derivatives_of_the_drain_current() -> None:
    """mos6load.c's gm, gds, gmbs equal the current's autograd derivatives in cut-off, triode and
    saturation, with the bulk reverse- and forward-biased."""
    from circuits.devices.mos6 import MOS6
    n = 8
    p = {k: torch.full((n,), float(v), dtype=torch.float64) for k, v in
         {**MOS6.model_params, **MOS6.instance_params, "polarity": 1.0}.items()}
    p.update({k: torch.full((n,), v, dtype=torch.float64) for k, v in
              {"vto": 0.7, "kc": 4e-5, "nc": 1.3, "kv": 0.9, "nv": 0.8, "lambda0": 0.02, "lambda1": 0.005,
               "gamma": 0.5, "gamma1": 0.02, "sigma": 0.03, "phi": 0.7, "w": 1e-5, "l": 1e-6}.items()})
    vgs = torch.tensor([0.3, 1.5, 1.5, 3.0, 3.0, 2.0, 2.0, 4.0], dtype=torch.float64, requires_grad=True)
    vds = torch.tensor([1.0, 0.1, 3.0, 0.2, 4.0, 0.5, 2.5, 1.0], dtype=torch.float64, requires_grad=True)
    vbs = torch.tensor([0.0, -1.0, -1.0, 0.0, -2.0, 0.3, 0.3, -0.5], dtype=torch.float64, requires_grad=True)
    d = MOS6.derived(p)
    ids, gm, gds, gmbs = MOS6.drain_current(vgs, vds, vbs, p, d)
    dg, dd, db = torch.autograd.grad(ids.sum(), (vgs, vds, vbs))
    assert ids[0] == 0 and ids[1:].gt(0).all()
    for analytic, auto in ((gm, dg), (gds, dd), (gmbs, db)):
        torch.testing.assert_close(analytic.detach(), auto, rtol=1e-12, atol=1e-18)


@pytest.mark.ngspice
@pytest.mark.skipif(not ngspice_available(), reason="ngspice not installed")
def test_mos6_drain_current_sweeps_match_ngspice() -> None:
    """I-V sweeps (drain ramped -0.3..5 V, NMOS and PMOS, forward and reverse mode) with gates in
    cut-off, near and well above threshold, bulks at 0, reverse- and forward-biased; every level-6
    drain-current parameter in some model, KC from UO, VTO GAMMA PHI from NSUB, m=2 (measured 4.0e-8)."""
    nrmse = nrmse_vs_ngspice(DATA / "mos6_iv.cir", ["i(vd6)", "i(vp6)"])
    assert nrmse["worst"] <= 1e-6, nrmse


@pytest.mark.slow
@pytest.mark.ngspice
@pytest.mark.skipif(not ngspice_available(), reason="ngspice not installed")
def test_mos6_inverter_chains_match_ngspice() -> None:
    """CMOS inverter chains at level 6 with junction (CJ/CJSW, CBD/CBS, JS), overlap and Meyer
    capacitances, NMOS and PMOS, one stage with m=2 (measured 5.5e-5)."""
    nrmse = nrmse_vs_ngspice(DATA / "mos6_inv.cir", ["v(a1)", "v(a2)", "v(b1)", "v(b2)"], MEYER_NGSPICE_OPTIONS,
                             rtol=1e-6)
    assert nrmse["worst"] <= 1e-3, nrmse
