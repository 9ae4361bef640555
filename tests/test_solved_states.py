"""The PINN's residual for exponential devices: a diode's current (no RS) is solved from its own row,
not learned, and circuits whose row sizes span decades over the design space get per-point row scales."""

from __future__ import annotations

import math

import pytest
import torch

from circuits.circuit import circuit_from_config, load_circuit, netlist_config
from circuits.devices.junction import GMIN, THERMAL_VOLTAGE
from surrogate.physics import CircuitPhysics
from surrogate.recipe import POINT_SCALE_SPREAD, _term_spread

RECTIFIER = """half-wave rectifier
.param rload=100k vamp=1
.model dm D (is=1e-13 n=1.05 {extra})
D1 vin vout dm
R1 vout 0 {{rload}}
V1 vin 0 sin(0 {{vamp}} 1e3 0 0 0)
.tran 2u 1m
.end
"""


def _rectifier(tmp_path, extra: str = ""):
    deck = tmp_path / "rect.cir"
    deck.write_text(RECTIFIER.format(extra=extra))
    return circuit_from_config(netlist_config(deck, {"rload": ["20k", "500k", "log"], "vamp": [0.5, 2]}),
                               source=str(deck))


def test_a_diode_current_without_rs_is_solved_and_with_rs_is_learned(tmp_path):
    plain = CircuitPhysics(_rectifier(tmp_path))
    i = plain.names.index("i(d1)")
    assert bool(plain.layout.solved[i]) and not bool(plain.layout.learned[i])
    assert plain.layout.learned.tolist() == [n == "v(vout)" for n in plain.names]
    with_rs = CircuitPhysics(_rectifier(tmp_path, "rs=10"))
    assert not bool(with_rs.layout.solved.any()) and bool(with_rs.layout.learned[i])
    for name in ("amp", "rc", "ring5"):  # nothing of the kind in the paper circuits
        assert not bool(CircuitPhysics(load_circuit(name)).layout.solved.any())


def test_the_solved_current_is_shockleys_of_the_voltages_and_zeroes_its_row(tmp_path):
    physics = CircuitPhysics(_rectifier(tmp_path))
    names = physics.names
    N = 64
    g = torch.Generator().manual_seed(3)
    P = physics.circuit.space.sample_uniform(N, g)
    bound = physics.bind(P)
    t = torch.rand(N, generator=g, dtype=torch.float64) * physics.tstop
    x = physics.pinned_values(bound, t)
    vout = -0.3 + 1.2 * torch.rand(N, generator=g, dtype=torch.float64)
    vout = torch.maximum(vout, physics.pinned_values(bound, t)[:, names.index("v(vin)")] - 1.0)
    x[:, names.index("v(vout)")] = vout
    x, rows = physics.complete(bound, x, torch.zeros_like(x), t)
    vd = x[:, names.index("v(vin)")] - vout
    nvt = 1.05 * THERMAL_VOLTAGE
    # ngspice's dioload.c: Shockley above -3 nVt, its cubic reverse form below; exp(v/nVt) is
    # continued linearly above 40 nVt (1.1 V), beyond the 1 V of forward bias at most met here
    reverse = -1e-13 * (1 + (3 * nvt / (math.e * vd.clamp(max=-1e-30))) ** 3)
    shockley = torch.where(vd >= -3 * nvt, 1e-13 * (torch.exp(vd / nvt) - 1), reverse) + GMIN * vd
    assert torch.allclose(x[:, names.index("i(d1)")], shockley, rtol=1e-10, atol=1e-25)
    assert float(rows[:, names.index("i(d1)")].abs().max()) <= 1e-12 * float(shockley.abs().max())
    # the load node's KCL is then the diode current against the load's
    kcl = rows[:, names.index("v(vout)")]
    assert torch.allclose(kcl, vout / P[:, 0] - shockley, rtol=1e-9, atol=1e-20)


def test_per_point_scales_are_chosen_where_row_sizes_span_decades_over_the_designs(tmp_path):
    rect = _rectifier(tmp_path)
    space = rect.space
    P = torch.cat([space.nominal_vector().unsqueeze(0), space.sample_sobol(5, seed=13_579)])
    assert _term_spread(rect, P) > POINT_SCALE_SPREAD  # the load current: 25x in R, 4x in amplitude
    rc = load_circuit("rc")
    P = torch.cat([rc.space.nominal_vector().unsqueeze(0), rc.space.sample_sobol(5, seed=13_579)])
    assert _term_spread(rc, P) < POINT_SCALE_SPREAD / 3


def test_a_point_scale_is_the_size_of_the_rows_terms_there_and_over_its_designs_points(tmp_path):
    from surrogate.physics import POINT_SCALE_FLOOR

    physics = CircuitPhysics(_rectifier(tmp_path))
    names = physics.names
    k = names.index("v(vout)")
    # two designs (500k load at 0.5 V, 20k at 2 V), each at the sine's crest and its trough
    P = torch.tensor([[500e3, 0.5], [500e3, 0.5], [20e3, 2.0], [20e3, 2.0]], dtype=torch.float64)
    bound = physics.bind(P)
    t = torch.tensor([0.25e-3, 0.75e-3, 0.25e-3, 0.75e-3], dtype=torch.float64)
    x = physics.pinned_values(bound, t)
    x[:, k] = torch.tensor([0.05, 0.0, 1.4, 0.0], dtype=torch.float64)
    x, _ = physics.complete(bound, x, torch.zeros_like(x), t)
    scale = physics.point_row_scale(bound, x, t)[:, k]
    terms = (x[:, k] / P[:, 0]).abs() + x[:, names.index("i(d1)")].abs()  # load and diode currents
    for a, b in ((0, 1), (2, 3)):
        own = torch.sqrt((terms[a] ** 2 + terms[b] ** 2) / 2)
        floor = torch.clamp(own, min=POINT_SCALE_FLOOR * float(physics.layout.row_scale[k]))
        for i in (a, b):
            assert float(scale[i]) == pytest.approx(float(torch.sqrt(floor ** 2 + terms[i] ** 2)), rel=1e-9)
    # the small design's residuals are weighed on its own currents (0.1 uA against 70 uA)
    assert float(scale[1]) < float(scale[3]) / 50


def test_frozen_point_scales_hold_while_the_network_moves(tmp_path):
    from tests.surrogate_helpers import build_run

    deck = tmp_path / "rect.cir"
    deck.write_text(RECTIFIER.format(extra=""))
    module, schedule, _ = build_run([f"netlist={deck}", "+space.rload=[20k,500k,log]", "+space.vamp=[0.5,2]",
                                     "model.point_scale=true", "model.width=8", "model.depth=1"])
    t, designs, starts = schedule.lbfgs_points(module, 0, seed=5)

    def loss() -> float:
        with torch.no_grad():
            return float(module.loss_terms(t, designs, 0, starts)["residual"])

    net = module.model.nets[0]
    before = [p.detach().clone() for p in net.parameters()]
    module.freeze_row_scales(True)
    frozen_first = loss()
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(1.5)
    frozen_moved = loss()
    module.freeze_row_scales(False)
    free_moved = loss()
    with torch.no_grad():
        for p, b in zip(net.parameters(), before):
            p.copy_(b)
    assert loss() == pytest.approx(frozen_first, rel=1e-12)  # frozen scales were those of the first state
    assert frozen_moved != pytest.approx(free_moved, rel=1e-6)  # and they did not follow the network


def test_a_source_stacked_on_a_grounded_one_pins_its_node_and_its_current_is_kcls(tmp_path):
    from circuits.simulation import simulate_tensor

    deck = tmp_path / "stack.cir"
    deck.write_text("stacked sources\n.param r=1k\nV1 a b SIN(0 1 1k)\nV2 b 0 DC 0.5\nR1 a 0 {r}\n"
                    "R2 b 0 2k\nR3 a c 3k\nC1 c 0 1n\n.tran 10u 1m\n.end\n")
    circuit = circuit_from_config(netlist_config(deck, {"r": [500, 2000]}), source=str(deck))
    physics = CircuitPhysics(circuit)
    names = physics.names
    assert [names[n] for n, _, _, _ in physics.grounded_sources] == ["v(b)", "v(a)"]
    assert physics.layout.learned.tolist() == [n == "v(c)" for n in names]
    with torch.no_grad():
        ref = simulate_tensor(circuit, None, rtol=1e-8)
    x, t = ref.x[0][1:-1], ref.t[1:-1]
    xdot = torch.gradient(ref.x[0], spacing=(ref.t,), dim=0)[0][1:-1]
    bound = physics.bind(circuit.space.nominal_vector().unsqueeze(0).expand(t.shape[0], -1))
    pinned = physics.pinned_values(bound, t)
    for node in ("v(a)", "v(b)"):  # v(b) = 0.5, v(a) = v(b) + V1(t)
        k = names.index(node)
        assert torch.allclose(pinned[:, k], x[:, k], atol=1e-9)
    guess = x.clone()
    for current in ("i(v1)", "i(v2)"):
        guess[:, names.index(current)] = 0.0
    completed, rows = physics.complete(bound, guess, xdot, t)
    for current in ("i(v1)", "i(v2)"):  # the reference solver's branch currents
        k = names.index(current)
        assert torch.allclose(completed[:, k], x[:, k], rtol=1e-4, atol=1e-9)
    for node in ("v(a)", "v(b)"):
        assert float(rows[:, names.index(node)].abs().max()) == 0.0
