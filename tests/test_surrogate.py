"""Surrogate plumbing: residual, save/load round trip, gradients vs finite differences, columns."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from circuits import load_circuit, simulate
from surrogate.api import Surrogate, SurrogateError, load_surrogate, save_surrogate
from surrogate.models import PlainSurrogate, WindowedSurrogate


@pytest.fixture(scope="module")
def rc_model() -> Surrogate:
    torch.manual_seed(0)
    return PlainSurrogate(load_circuit("rc"), width=16, depth=2, fourier=2)


def test_residual_vanishes_on_the_reference_solution(rc_model):
    """Plugging the reference waveform (and its derivative) into the PINN residual gives ~0."""
    circuit = rc_model.circuit
    phys = rc_model.physics
    t = torch.linspace(0.5e-9, 3.5e-9, 50, dtype=torch.float64)
    df = simulate(circuit, t=t, outputs="all", rtol=1e-7)
    x = torch.tensor(df[phys.names].to_numpy())
    h = 1e-13
    xdot = (torch.tensor(simulate(circuit, t=t + h, outputs="all", rtol=1e-7)[phys.names].to_numpy())
            - torch.tensor(simulate(circuit, t=t - h, outputs="all", rtol=1e-7)[phys.names].to_numpy())) / (2 * h)
    bound = phys.bind(circuit.space.nominal_vector().expand(len(t), -1))
    r = phys.residual(bound, x, xdot, t)
    assert r.abs().max() < 1e-3


def test_state_respects_initial_condition_and_pinned_source(rc_model):
    c = rc_model.circuit
    t = torch.tensor([0.0, 1e-9, 3e-9], dtype=torch.float64)
    with torch.no_grad():
        x = rc_model.state(t, c.space.nominal_vector().expand(3, -1))
    assert float(x[0, rc_model.physics.dae.index("v(out)")]) == 0.0
    assert torch.allclose(x[:, rc_model.physics.dae.index("v(in)")], torch.tensor([0.0, 1.0, 1.0],
                                                                                   dtype=torch.float64))


def test_pinned_source_rate_is_the_pulse_slope_and_not_stale(rc_model):
    """The cached pinned values/rates follow the points: the PULSE edge (0 -> 1 V in 10 ps from
    0.2 ns) has slope 1e11 V/s, the flat top 0; asking again at the first times gives them back."""
    c = rc_model.circuit
    idx = rc_model.physics.dae.index("v(in)")
    P = c.space.nominal_vector().expand(2, -1)
    on_edge = torch.tensor([0.203e-9, 0.205e-9], dtype=torch.float64)
    flat = torch.tensor([1e-9, 2e-9], dtype=torch.float64)
    with torch.no_grad():
        runs = [rc_model.state(t, P, with_rate=True)[:2] for t in (on_edge, flat, on_edge)]
    (x_edge, v_edge), (x_flat, v_flat), (x_again, v_again) = runs
    assert torch.allclose(v_edge[:, idx], torch.full((2,), 1e11, dtype=torch.float64), rtol=1e-6)
    assert torch.allclose(x_edge[:, idx], torch.tensor([0.3, 0.5], dtype=torch.float64), rtol=1e-6)
    assert torch.equal(v_flat[:, idx], torch.zeros(2, dtype=torch.float64))
    assert torch.equal(x_flat[:, idx], torch.ones(2, dtype=torch.float64))
    assert torch.equal(x_again, x_edge) and torch.equal(v_again, v_edge)


def test_predict_columns_match_simulate(rc_model):
    pred = rc_model.predict(params={"r": 1500})
    ref = simulate(rc_model.circuit, {"r": 1500})
    assert list(pred.columns) == list(ref.columns)
    assert isinstance(pred, pd.DataFrame) and len(pred) == 501


def assert_gradient_matches_central_differences(model: Surrogate, t: torch.Tensor, p: list[float]) -> None:
    """d sum(v(t))/dp by autograd vs central differences with relative steps 1e-6."""
    p = torch.tensor(p, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(model(t, p)[:, 0].sum(), p)
    with torch.no_grad():
        for k in range(len(p)):
            h = 1e-6 * float(p[k])
            pp, pm = p.detach().clone(), p.detach().clone()
            pp[k] += h
            pm[k] -= h
            fd = (model(t, pp)[:, 0].sum() - model(t, pm)[:, 0].sum()) / (2 * h)
            assert float(g[k]) == pytest.approx(float(fd), rel=1e-5, abs=1e-9 / float(p[k]))


def test_gradient_wrt_design_matches_finite_differences(rc_model):
    assert_gradient_matches_central_differences(rc_model, torch.linspace(0, 6e-9, 40, dtype=torch.float64),
                                                [1200.0, 1.3e-12])


def test_save_load_round_trip(rc_model, tmp_path):
    path = tmp_path / "rc.pt"
    save_surrogate(rc_model, path, {"note": "test"})
    loaded = load_surrogate(path)
    t = torch.linspace(0, 6e-9, 30, dtype=torch.float64)
    P = rc_model.circuit.space.sample_sobol(3)
    with torch.no_grad():
        assert torch.equal(loaded.predict_batch(t, P), rc_model.predict_batch(t, P))
    assert loaded.metrics == {"note": "test"}


def test_load_rejects_bad_files(tmp_path):
    with pytest.raises(SurrogateError, match="no such surrogate file"):
        load_surrogate(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(SurrogateError, match="not a NeuroSPICE surrogate file .damaged or not a torch file"):
        load_surrogate(bad)
    other = tmp_path / "other.pt"
    torch.save({"weights": 1}, other)
    with pytest.raises(SurrogateError, match="not a NeuroSPICE surrogate"):
        load_surrogate(other)


def test_amp_initial_state_is_the_operating_point_with_gradient():
    torch.manual_seed(0)
    model = PlainSurrogate(load_circuit("amp"), width=8, depth=1)
    P = torch.tensor([[4e3, 2e-6, 20e-15]], dtype=torch.float64, requires_grad=True)
    x0 = model.physics.initial_state(model.physics.bind(P))
    d = model.physics.dae.index("v(d)")
    ref = simulate(model.circuit, {"rd": 4e3, "w": 2e-6, "cl": 20e-15}, outputs="all")
    assert float(x0[0, d]) == pytest.approx(ref["v(d)"].iloc[0], abs=1e-9)
    (g,) = torch.autograd.grad(x0[0, d], P)
    with torch.no_grad():
        h = 1.0
        hi = model.physics.initial_state(model.physics.bind(P.detach() + torch.tensor([[h, 0, 0]])))
        lo = model.physics.initial_state(model.physics.bind(P.detach() - torch.tensor([[h, 0, 0]])))
    assert float(g[0, 0]) == pytest.approx(float((hi[0, d] - lo[0, d]) / (2 * h)), rel=1e-5)
    assert np.isfinite(float(g[0, 1]))


@pytest.fixture(scope="module")
def windowed_model() -> Surrogate:
    torch.manual_seed(1)
    return WindowedSurrogate(load_circuit("rc"), width=16, depth=2, windows=3)


def test_windowed_waveform_is_continuous_at_window_edges(windowed_model):
    """Each window starts where the previous one ends (hard continuity), for every design."""
    m = windowed_model
    P = m.circuit.space.sample_sobol(4)
    out = m.physics.dae.index("v(out)")
    with torch.no_grad():
        for edge in m.edges[1:-1].tolist():
            t = torch.tensor([edge * (1 - 1e-12), edge], dtype=torch.float64).repeat(4)
            x = m.state(t, P.repeat_interleave(2, dim=0))[:, out].view(4, 2)
            assert torch.allclose(x[:, 0], x[:, 1], atol=1e-9)
            assert (x[:, 0] - x[:, 1]).abs().max() < 1e-9


def assert_batch_matches_pointwise_and_round_trips(m: Surrogate, n_times: int, path) -> None:
    """predict_batch on a grid equals pointwise `at` for 3 designs, and survives save/load exactly."""
    t = torch.linspace(0, m.circuit.tstop, n_times, dtype=torch.float64)
    P = m.circuit.space.sample_sobol(3)
    with torch.no_grad():
        batch = m.predict_batch(t, P)
        y, _ = m.at(t.repeat(3), P.repeat_interleave(n_times, dim=0))
        assert torch.allclose(batch.reshape(-1, len(m.circuit.outputs)), y, rtol=1e-12, atol=1e-12)
        save_surrogate(m, path)
        assert torch.equal(load_surrogate(path).predict_batch(t, P), batch)


def test_windowed_predict_batch_matches_pointwise_state_and_round_trips(windowed_model, tmp_path):
    assert_batch_matches_pointwise_and_round_trips(windowed_model, 37, tmp_path / "w.pt")


def test_windowed_gradient_flows_through_the_window_chain(windowed_model):
    """d v(t)/d p in the last window (which depends on p through every earlier window) vs central FD."""
    assert_gradient_matches_central_differences(windowed_model, torch.tensor([5.5e-9], dtype=torch.float64),
                                                [900.0, 0.8e-12])


@pytest.mark.parametrize("activation", ["tanh", "silu"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_hand_forward_mode_matches_torch_jvp(activation, dtype):
    """forward_with_rate's hand-written tangent (and its in-place no-grad form) equals torch.func.jvp."""
    from surrogate.nets import PinnNet

    torch.manual_seed(1)
    net = PinnNet(3, 4, width=24, depth=3, fourier=2, activation=activation, breakpoints=[0.3, 0.7]).to(dtype)
    t, u = torch.rand(200, 1, dtype=dtype), torch.rand(200, 3, dtype=dtype)
    feats, rates = net._features(t)
    y_ref, rate_ref = torch.func.jvp(net.mlp, (torch.cat([feats, u], 1),), (torch.cat([rates, torch.zeros_like(u)], 1),))
    tol = 1e-12 if dtype == torch.float64 else 2e-6  # float32 no-grad tanh is 2σ(2h) − 1 (within 2e-7)
    y, rate = net.forward_with_rate(t, u)
    with torch.no_grad():
        y_ng, rate_ng = net.forward_with_rate(t, u)
        y_fwd = net(t, u)
    scale = rate_ref.abs().max()
    assert (y - y_ref).abs().max() <= (1e-12 if dtype == torch.float64 else 1e-6)
    assert (rate - rate_ref).abs().max() <= tol * scale
    assert (y_ng - y_ref).abs().max() <= tol and (y_fwd - y_ref).abs().max() <= tol
    assert (rate_ng - rate_ref).abs().max() <= tol * scale


def test_sobol_margin_puts_a_share_of_designs_on_the_faces():
    space = load_circuit("amp").space
    lo, hi = space.bounds()
    P = space.sample_sobol(4096, seed=0, margin=0.1)
    assert bool(((P >= lo) & (P <= hi)).all())
    on_face = ((P == lo) | (P == hi)).double().mean(dim=0)  # expected 2m/(1+2m) = 1/6 per coordinate
    assert torch.allclose(on_face, torch.full_like(on_face, 1 / 6), atol=0.02)
    assert torch.equal(space.sample_sobol(64, seed=3), space.sample_sobol(64, seed=3, margin=0.0))


def test_terms_row_scale_of_rc_is_twice_the_rms_capacitor_current():
    """rc's output row holds i_R = (v_in − v_out)/R and C dv_out/dt, equal in size: the 'terms'
    scale is 2·RMS(i_R) over the nominal window (analytic: v_out charges towards the pulse)."""
    from surrogate.physics import CircuitPhysics

    circuit = load_circuit("rc")
    phys = CircuitPhysics(circuit, row_scale="terms")
    t = torch.linspace(0.0, circuit.tstop, 6001, dtype=torch.float64)
    tau, t0, t1 = 1e-9, 0.205e-9, 4.215e-9  # r = 1k, c = 1p; 10 ps pulse edges taken at their midpoints
    v_out = torch.where(t > t0, 1 - torch.exp(-(t - t0) / tau), torch.zeros_like(t))
    v_out = torch.where(t > t1, v_out[t <= t1][-1] * torch.exp(-(t - t1) / tau), v_out)
    v_in = torch.where((t > t0) & (t <= t1), 1.0, 0.0)
    i_r = (v_in - v_out) / 1e3
    expected = 2 * torch.sqrt((i_r ** 2).mean())
    row = phys.names.index("v(out)")
    assert float(phys.layout.row_scale[row]) == pytest.approx(float(expected), rel=0.01)
    assert float(CircuitPhysics(circuit).layout.row_scale[row]) > 2 * float(expected)  # Jacobian scale: larger


def test_explicit_window_edges_round_trip_and_bad_edges(tmp_path):
    circuit = load_circuit("rc")
    torch.manual_seed(2)
    m = WindowedSurrogate(circuit, width=8, depth=1, window_edges=[1e-9, 1.5e-9])
    assert m.windows == 3
    assert torch.equal(m.edges, torch.tensor([0.0, 1e-9, 1.5e-9, circuit.tstop], dtype=torch.float64))
    save_surrogate(m, tmp_path / "w.pt")
    back = load_surrogate(tmp_path / "w.pt")
    t = torch.linspace(0, circuit.tstop, 41, dtype=torch.float64)
    P = circuit.space.sample_sobol(2)
    with torch.no_grad():
        assert torch.allclose(back.predict_batch(t, P), m.predict_batch(t, P), rtol=0, atol=1e-12)
    for bad in ([2e-9, 1e-9], [0.0, 1e-9], [circuit.tstop]):
        with pytest.raises(SurrogateError, match="window_edges"):
            WindowedSurrogate(circuit, width=8, depth=1, window_edges=bad)


def test_farthest_points_keeps_isolated_rows_and_covers_better_than_random():
    """Greedy farthest-point choice: the 5 far-apart rows among 500 clustered ones are all chosen,
    and on uniform points its covering radius beats a random subset of the same size."""
    from surrogate.data import farthest_points

    gen = torch.Generator().manual_seed(0)
    cluster = 0.01 * torch.rand(500, 3, generator=gen, dtype=torch.float64)
    outliers = torch.eye(3, dtype=torch.float64).repeat(2, 1)[:5] * torch.arange(1, 6).unsqueeze(1)
    z = torch.cat([cluster, outliers])
    chosen = set(farthest_points(z, 8).tolist())
    assert set(range(500, 505)) <= chosen and len(chosen) == 8

    def covering_radius(idx):
        return float(torch.cdist(u, u[idx]).min(dim=1).values.max())

    u = torch.rand(2000, 2, generator=gen, dtype=torch.float64)
    fps = farthest_points(u, 16)
    random = torch.randperm(2000, generator=gen)[:16]
    assert covering_radius(fps) < covering_radius(random)
    gaps = torch.cdist(u[fps], u[fps]) + torch.eye(16, dtype=torch.float64)
    assert float(gaps.min()) >= covering_radius(fps) - 1e-12  # the greedy choice's separation bound
    with pytest.raises(ValueError, match="cannot choose 9 of 8"):
        farthest_points(u[:8], 9)


def test_row_scales_come_from_states_with_the_sources_values_at_pinned_nodes():
    """ring5 starts (uic) with its supply node at 0 V, which forward-biases every PMOS bulk junction;
    the network never sees that state.  The five identical inverter nodes get the same row scale
    (within 10 %), as the symmetric ring demands, not scales 1e8x apart."""
    from circuits.circuit import load_circuit
    from surrogate.physics import CircuitPhysics

    physics = CircuitPhysics(load_circuit("ring5"))
    nodes = [physics.names.index(f"v(n{k})") for k in range(1, 6)]
    scales = physics.layout.row_scale[nodes]
    assert float(scales.max() / scales.min()) < 1.1
