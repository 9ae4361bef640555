"""Junction and gate voltage limiting in Newton (ngspice's devsup.c pnjlim, fetlim, limvds)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from circuits import load_circuit, run_ngspice, simulate
from circuits.dc import DC_MAX_ITER, _newton, fixed_newton_tolerance
from circuits.devices.junction import THERMAL_VOLTAGE, fetlim, limvds, pnjlim
from circuits.limiting import Limiter
from circuits.measure import compare
from circuits.ngspice import ngspice_available
from circuits.simulation import dae_of

DATA = Path(__file__).parent / "data"


# devsup.c transcribed line by line (scalars), the oracle for the vectorised versions
def _pnjlim_c(vnew: float, vold: float, vt: float, vcrit: float) -> float:
    if vnew > vcrit and abs(vnew - vold) > vt + vt:
        if vold > 0:
            arg = (vnew - vold) / vt
            return vold + vt * (2 + math.log(arg - 2)) if arg > 0 else vold - vt * (2 + math.log(2 - arg))
        return vt * math.log(vnew / vt)
    if vnew < 0:
        arg = -1 * vold - 1 if vold > 0 else 2 * vold - 1
        if vnew < arg:
            return arg
    return vnew


def _fetlim_c(vnew: float, vold: float, vto: float) -> float:
    vtsthi, vtstlo, vtox, delv = abs(2 * (vold - vto)) + 2, abs(vold - vto) + 1, vto + 3.5, vnew - vold
    if vold >= vto:
        if vold >= vtox:
            if delv <= 0:
                if vnew >= vtox:
                    return vold - vtstlo if -delv > vtstlo else vnew
                return max(vnew, vto + 2)
            return vold + vtsthi if delv >= vtsthi else vnew
        return max(vnew, vto - .5) if delv <= 0 else min(vnew, vto + 4)
    if delv <= 0:
        return vold - vtsthi if -delv > vtsthi else vnew
    vtemp = vto + .5
    if vnew <= vtemp:
        return vold + vtstlo if delv > vtstlo else vnew
    return vtemp


def _limvds_c(vnew: float, vold: float) -> float:
    if vold >= 3.5:
        if vnew > vold:
            return min(vnew, 3 * vold + 2)
        return max(vnew, 2) if vnew < 3.5 else vnew
    return min(vnew, 4) if vnew > vold else max(vnew, -.5)


_GRID = np.array([-50.0, -6.0, -3.2, -1.0, -0.3, 0.0, 0.05, 0.3, 0.6, 0.65, 0.7, 0.75, 0.9, 1.2, 3.0, 3.6,
                  4.5, 8.0, 40.0, 1e3])


def _pairs() -> tuple[torch.Tensor, torch.Tensor]:
    vnew, vold = np.meshgrid(_GRID, _GRID, indexing="ij")
    return torch.tensor(vnew.ravel()), torch.tensor(vold.ravel())


def test_pnjlim_fetlim_limvds_are_devsup_c() -> None:
    """The vectorised limiters equal devsup.c's scalar code on a grid of (new, old) voltage pairs."""
    vnew, vold = _pairs()
    vt, vcrit = THERMAL_VOLTAGE, 0.6
    got = pnjlim(vnew, vold, vt, torch.full_like(vnew, vcrit))
    want = [_pnjlim_c(a, b, vt, vcrit) for a, b in zip(vnew.tolist(), vold.tolist())]
    assert torch.allclose(got, torch.tensor(want, dtype=got.dtype), rtol=1e-14, atol=0)
    for vto in (0.7, -0.8):
        got = fetlim(vnew, vold, torch.full_like(vnew, vto))
        assert got.tolist() == [_fetlim_c(a, b, vto) for a, b in zip(vnew.tolist(), vold.tolist())]
    assert limvds(vnew, vold).tolist() == [_limvds_c(a, b) for a, b in zip(vnew.tolist(), vold.tolist())]
    unlimited = got == vnew  # where nothing is limited the very input values come back
    assert unlimited.any() and (~unlimited).any()


@pytest.mark.skipif(not ngspice_available(), reason="ngspice not installed")
def test_ttl_gates_dc_point_by_limited_newton_matches_ngspice() -> None:
    """Two TTL NAND gates (13 junctions each): Newton with pnjlim from ngspice's junction starting
    voltages converges from 0 V within ngspice's DC iteration limit, to the point plain Newton finds
    here, and the transient matches ngspice (the 180-BJT adder of the corpus needs the limiting)."""
    circuit = load_circuit(DATA / "ttl_nand_pair.cir", outputs=["v(3)", "v(4)", "v(x1.9)", "v(x2.6)"])
    bound = dae_of(circuit).bind()
    x = torch.zeros(1, bound.dae.size, dtype=torch.float64)
    tol = fixed_newton_tolerance(bound, x)

    def system(y, limiter=None, limiting=True):
        _, f, _, jf = bound.jacobians(y, 0.0, limiter=limiter if limiting else None)
        return f, jf

    with torch.no_grad():
        limited, ok, iters = _newton(system, x, tol, DC_MAX_ITER, math.inf, Limiter(start=True))
        assert ok, f"limited Newton did not converge in {iters} iterations"
        plain, plain_ok, _ = _newton(lambda y, lim: system(y, limiting=False), x, tol, DC_MAX_ITER, math.inf)
        assert plain_ok and torch.allclose(limited, plain, atol=1e-9, rtol=0)
    ng = run_ngspice(circuit)
    ours = simulate(circuit, t=torch.tensor(ng.time.to_numpy().copy()))
    assert compare(ng, ours)["worst"] <= 1e-3


@pytest.mark.skipif(not ngspice_available(), reason="ngspice not installed")
def test_a_batch_of_cmos_inverters_at_their_switching_point_matches_ngspice() -> None:
    """ngspice's CMOS inverter example (no capacitors, lambda = 0: at the switching point both devices
    are saturated and v(out) is almost undetermined). The per-design Newton of a batch diverged there
    (v(out) to 1e10 V, 'time step too small') until it limited gate and drain voltages as ngspice does;
    every design of the batch now matches ngspice run on its own."""
    import pandas as pd

    from circuits.circuit import circuit_from_config, netlist_config
    from circuits.simulation import simulate_batch

    deck = Path(__file__).parent / "data" / "train" / "cmos_inverter_pulse.cir"
    circuit = circuit_from_config(netlist_config(deck, {"vdd": [4, 6]}))
    supplies = [4.2, 4.7, 5.0, 5.0, 5.8]
    runs = [run_ngspice(circuit, {"vdd": vdd}) for vdd in supplies]
    grid = torch.tensor(runs[0].time.to_numpy().copy())
    out = circuit.outputs.index("v(out)")
    for rtol, worst in ((1e-5, 1e-3), (1e-3, 3e-3)):
        _, y = simulate_batch(circuit, [{"vdd": v} for v in supplies], t=grid, rtol=rtol, steps="per_design")
        for k, ng in enumerate(runs):
            on_ng = np.interp(ng.time.to_numpy(), grid.numpy(), y[k, :, out].numpy())
            ours = pd.DataFrame({"time": ng.time.to_numpy(), "v(out)": on_ng})
            assert compare(ng, ours, columns=["v(out)"])["worst"] <= worst, (supplies[k], rtol)
