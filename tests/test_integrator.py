"""The one integrator (method, weights, step controller) and the single-design source table."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from circuits import run_ngspice, simulate
from circuits.circuit import circuit_from_config
from circuits.integrator import CONTROLLER, method_of, predictor_degree, second_order, step_weights
from circuits.measure import compare
from circuits.ngspice import ngspice_available
from circuits.simulation import dae_of
from circuits.source_table import SourceTable
from circuits.split import SplitDAE

STEPS = [(1e-9, 0.7e-9), (2e-12, 5e-12), (1.0, 1.0)]  # (h, h_prev)


def _cubic(t: float) -> tuple[float, float]:
    """q(t) = 1 + 2t - t² + t³ and its derivative."""
    return 1 + 2 * t - t * t + t ** 3, 2 - 2 * t + 3 * t * t


@pytest.mark.parametrize("name", ["trap", "bdf2"])
@pytest.mark.parametrize("h,h_prev", STEPS)
def test_one_step_error_on_a_cubic_is_the_lte_factor_times_its_third_derivative(name, h, h_prev):
    """Second-order step from exact history: q_{n+1} from the method's rule misses q(t_{n+1}) by
    lte_factor(h, h_prev) * q''' (q''' = 6), the estimate the step controller divides by."""
    method = method_of(name)
    t0, t1 = -h_prev, 0.0
    co = method.coefficients(h, h_prev, True)
    (q0, _), (q1, qdot1), (q2, qdot2) = _cubic(t0), _cubic(t1), _cubic(h)
    b = method.history(co, q1, q0, qdot1)
    q_step = (qdot2 - b) / co.a  # qdot_{n+1} = a q_{n+1} + b solved for q_{n+1}
    assert abs(q_step - q2) == pytest.approx(method.lte_factor(h, h_prev) * 6.0, rel=1e-6)


@pytest.mark.parametrize("name", ["trap", "bdf2"])
def test_first_order_step_is_backward_euler(name):
    co = method_of(name).coefficients(0.5, None, False)
    assert (co.a, co.c0, co.c1, co.k) == (2.0, -2.0, 0.0, 0.0)


@pytest.mark.parametrize("name", ["trap", "bdf2"])
def test_per_design_tensors_get_the_same_coefficients_as_floats(name):
    """The per-design loop calls the same code on (B,) tensors: row by row it must equal the
    shared loop's float call."""
    method = method_of(name)
    h = torch.tensor([1e-9, 2e-12, 1.0], dtype=torch.float64)
    h_prev = torch.tensor([0.7e-9, 5e-12, 1.0], dtype=torch.float64)
    second = torch.tensor([True, False, True])
    co = method.coefficients(h, h_prev, second)
    q1, q0, qdot = (torch.rand(3, 4, dtype=torch.float64) for _ in range(3))
    b = method.history(co, q1, q0, qdot)
    lte = method.lte_factor(h, h_prev)
    for k in range(3):
        ref = method.coefficients(float(h[k]), float(h_prev[k]), bool(second[k]))
        for field in ("a", "c0", "c1", "k"):
            assert float(torch.as_tensor(getattr(co, field)).expand(3)[k]) == pytest.approx(getattr(ref, field))
        assert torch.allclose(b[k], method.history(ref, q1[k], q0[k], qdot[k]), rtol=1e-14)
        assert float(lte[k]) == pytest.approx(method.lte_factor(float(h[k]), float(h_prev[k])))


def test_controller_gives_tensors_the_float_answers():
    ratio = torch.tensor([1e-20, 0.01, 0.9, 1.5, 1e6], dtype=torch.float64)
    h = torch.full((5,), 1e-9, dtype=torch.float64)
    gain = CONTROLLER.gain(ratio)
    nxt = CONTROLLER.after_accept(h, gain, torch.ones(5, dtype=torch.bool))
    retry = CONTROLLER.after_rejection(h, gain)
    for k in range(5):
        g = CONTROLLER.gain(float(ratio[k]))
        assert float(gain[k]) == pytest.approx(g)
        assert float(nxt[k]) == pytest.approx(CONTROLLER.after_accept(1e-9, g, True))
        assert float(retry[k]) == pytest.approx(CONTROLLER.after_rejection(1e-9, g))
    # growth is capped at 2x, shrinking after an accepted step at 0.3x, a retry at 0.2x
    assert float(nxt[0]) == pytest.approx(2e-9) and float(nxt[-1]) == pytest.approx(0.3e-9)
    assert float(retry[-1]) == pytest.approx(0.2e-9)


def test_start_and_reset_rules_give_tensors_the_float_answers():
    """Two backward-Euler steps after the start, one after a reset; the predictor never reaches back
    across the first step after the start nor across a reset (two points since one: linear)."""
    npts, total = [1, 2, 2, 3, 3, 5, 2], [1, 2, 3, 3, 4, 9, 9]
    orders = [bool(second_order(n, k)) for n, k in zip(npts, total)]
    degrees = [predictor_degree(n, k) for n, k in zip(npts, total)]
    assert orders == [False, False, True, True, True, True, True]
    assert degrees == [0, 0, 1, 1, 2, 2, 1]
    n_t, k_t = torch.tensor(npts), torch.tensor(total)
    assert second_order(n_t, k_t).tolist() == orders and predictor_degree(n_t, k_t).tolist() == degrees


def test_step_weights_extrapolate_a_quadratic_and_differentiate_a_cubic():
    ts = [0.0, 0.3, 1.1, 1.6]
    guess, third = step_weights(*ts)
    quad = [2 - t + 0.5 * t * t for t in ts]
    assert sum(w * v for w, v in zip(guess, quad)) == pytest.approx(quad[3], rel=1e-12)
    cube = [t ** 3 - 2 * t for t in ts]
    assert sum(w * v for w, v in zip(third, cube)) == pytest.approx(6.0, rel=1e-9)


ALIGNED_SINE = "aligned\nV1 a 0 SIN(0 1 1G)\nR1 a 0 1k\n.tran 1p 4n\n.end\n"
MIXED = ("mixed\nV1 a 0 SIN(0 1 1G)\nR1 a 0 1k\nV2 b 0 PULSE(0 2 0.1n 10p 20p 0.3n 1n)\nR2 b 0 1k\n"
         "I1 0 c SIN(0.5m 1m 2.5G 0.2n 1e8 30)\nR3 c 0 1k\n.tran 1p 4n\n.end\n")


# ngspice's PULSE with pw > per: V1 exactly at each period start, V2 on both sides of it (the rise
# restarts every period), so each segment's value at its end is neither side's limit
WRAPPED_PULSE = "wrapped\nV1 a 0 PULSE(5 0 1n 10p 10p 1 2n)\nR1 a 0 1k\n.tran 1p 9n\n.end\n"


def _source_table(netlist: str) -> tuple[SourceTable, SplitDAE, list[float], float]:
    circuit = circuit_from_config({"name": "sources", "netlist": netlist, "params": {}, "outputs": ["v(a)"]})
    bound = dae_of(circuit).bind(circuit.design_matrix(None))
    split = SplitDAE(bound)
    edges = [0.0] + [b for b in bound.breakpoints() if 0 < b < circuit.tstop] + [circuit.tstop]
    return SourceTable(split, edges), split, edges, circuit.tstop


@pytest.mark.parametrize("netlist", [ALIGNED_SINE, MIXED, WRAPPED_PULSE], ids=["aligned_sine", "mixed", "wrapped_pulse"])
def test_source_table_reproduces_direct_evaluation(netlist):
    """The tabulated source term matches the device evaluation at arbitrary times to 1e-10 of each
    row's peak: sines, a damped delayed sine, a PULSE train, a sine over exactly 4 periods (a
    4-interval grid sees zeros at its nodes and midpoints: only an off-centre check rejects it), and
    a PULSE whose values at its breakpoints are neither side's limit."""
    table, split, edges, tstop = _source_table(netlist)
    times = np.concatenate([np.random.default_rng(0).uniform(0, tstop, 400), edges])
    with torch.no_grad():
        direct = torch.cat([split.sources(torch.tensor([t], dtype=torch.float64)) for t in times]).numpy()
    tabulated = np.stack([table(float(t)) for t in times])
    peak = np.abs(direct).max(axis=0)
    err_rel = np.abs(tabulated - direct).max(axis=0) / np.where(peak > 0, peak, 1.0)
    assert err_rel.max() < 1e-10, err_rel
    k = min(3, len(edges) - 2)  # many() on one segment, with its ends
    inside = np.random.default_rng(1).uniform(edges[k], edges[k + 1], 50)
    block = np.concatenate([[edges[k]], np.sort(inside), [edges[k + 1]]])
    with torch.no_grad():
        direct = torch.cat([split.sources(torch.tensor([t], dtype=torch.float64)) for t in block]).numpy()
    assert np.abs(table.many(list(block)) - direct).max() <= 1e-10 * np.abs(direct).max()


def test_source_table_tabulates_a_pulse_whose_breakpoint_values_jump():
    """Every segment of the wrapped PULSE is tabulated (none left to direct evaluation per call):
    the grid stays clear of the segment ends, whose own values are kept apart."""
    table, *_ = _source_table(WRAPPED_PULSE)
    assert all(seg is not None for seg in table._segments)


def test_run_ahead_takes_the_steps_of_the_step_by_step_loop(monkeypatch):
    """One linear design pinned at the step ceiling solves blocks of steps before checking them
    together; the steps, their times and the waveform are those of checking every step on its own."""
    import circuits.solve as solve
    from circuits import simulate

    netlist = ("rlc\nV1 in 0 SIN(0 1 50Meg)\nR1 in a 20\nL1 a b 100n\nC1 b 0 10p\nR2 b 0 1k\n"
               "V2 c 0 PULSE(0 1 30n 1n 1n 20n 60n)\nR3 c b 2k\n.tran 0.1n 200n\n.end\n")
    circuit = circuit_from_config({"name": "rlc", "netlist": netlist, "params": {}, "outputs": ["v(b)"]})
    calls = []
    run_ahead = solve._run_ahead
    monkeypatch.setattr(solve, "_run_ahead", lambda *a, **k: calls.append(1) or run_ahead(*a, **k))
    blocked = simulate(circuit, hmax=0.2e-9)
    assert len(calls) > 5  # the step was pinned at the ceiling for long stretches
    monkeypatch.setattr(solve, "RUN_AHEAD", 0)
    single = simulate(circuit, hmax=0.2e-9)
    assert len(blocked) == len(single) and blocked.attrs["stats"]["steps"] == single.attrs["stats"]["steps"]
    assert np.array_equal(blocked.time.to_numpy(), single.time.to_numpy())
    assert np.abs(blocked["v(b)"].to_numpy() - single["v(b)"].to_numpy()).max() < 1e-12


# default level-1 MOSFETs have no capacitances: no node of this inverter holds charge
CMOS_INVERTER = """cmos inverter without capacitances
Vd dd 0 dc 5
Vin in 0 PULSE(0 5 0 10n 10n 100n 200n)
mn1 out in 0 0 nm
mp1 out in dd dd pm
.model nm nmos
.model pm pmos
.tran 5n 130n
.end
"""

ASTABLE = """astable multivibrator, two BC548 released from .ic
.model BC548 NPN(Is=1.822f Xti=3 Eg=1.11 Vaf=72.71 Bf=445.5 Ne=1.394
+ Ise=1.822f Ikf=65.56m Xtb=1.5 Br=35.46 Nc=2 Isc=0 Ikr=0 Rc=0.85
+ Cjc=4.516p Mjc=0.3421 Vjc=0.45 Fc=0.5 Cje=12.23p Mje=0.307 Vje=0.75
+ Tr=10n Tf=481.5p Itf=0.5 Vtf=10 Xtf=2 Rb=10)
VCC vcc 0 DC 9
R1 vcc c1 1k
R4 vcc c2 1k
R2 vcc b1 15k
R3 vcc b2 15k
C1 c1 b2 10u
C2 c2 b1 10u
Q1 c1 b1 0 BC548
Q2 c2 b2 0 BC548
.ic V(b1)=0 V(b2)=0.7
.tran 1ms 50ms
.end
"""


@pytest.mark.skipif(not ngspice_available(), reason="ngspice not installed")
def test_charge_free_output_is_resolved_along_its_input_edges():
    """v(out) of an inverter without capacitances is a steep algebraic function of vin: the LTE check
    on node voltages resolves it between steps, so interpolated at ngspice's points it is ngspice's
    (sampled only by the step doubling after vin's corners it was 2e-2 off)."""
    circuit = circuit_from_config({"name": "cmos_no_caps", "netlist": CMOS_INVERTER})
    ng = run_ngspice(circuit)
    ours = simulate(circuit, t=torch.tensor(ng.time.to_numpy().copy()))
    assert compare(ng, ours)["worst"] <= 1e-3


@pytest.mark.skipif(not ngspice_available(), reason="ngspice not installed")
def test_start_released_from_ic_stays_on_ngspices_branch():
    """Released from .ic, the astable jumps within ~0.1 us, inside the first 10 us step.  The next
    steps neither extrapolate across that step nor take its chord as a slope, so Newton stays on the
    branch ngspice follows (not the flipped state) and the steps grow again."""
    circuit = circuit_from_config({"name": "astable_start", "netlist": ASTABLE})
    ng = run_ngspice(circuit)
    ours = simulate(circuit, t=torch.tensor(ng.time.to_numpy().copy()))
    assert ours.attrs["stats"]["steps"] < 1000
    after = ng.time.to_numpy() >= 1e-4  # the jump itself lies inside either engine's first step
    assert compare(ng[after].reset_index(drop=True), ours[after].reset_index(drop=True))["worst"] <= 1e-3
