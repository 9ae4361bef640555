"""Inverse design: IFT crossing gradients and objective gradients vs finite differences, known rc designs
recovered by the gradient search and by Optuna (checked with the reference solver), out-of-range targets."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from circuits.errors import ConfigError
from optimize.correct import corrected_search, newton_retarget, retarget
from optimize.crossing import refine_crossings
from optimize.evaluators import ReferenceEvaluator, SurrogateEvaluator
from optimize.gradient import gradient_search
from optimize.measurements import Measurement
from optimize.optuna_baseline import optuna_search
from optimize.tasks import load_task, task_from_config
from surrogate.api import load_surrogate

ROOT = Path(__file__).resolve().parent.parent
RC_SURROGATE = ROOT / "pretrained" / "rc.pt"
needs_rc = pytest.mark.skipif(not RC_SURROGATE.is_file(), reason="pretrained/rc.pt missing (scripts/train_all.sh rc)")


@pytest.fixture(scope="module")
def rc_eval() -> SurrogateEvaluator:
    return SurrogateEvaluator(load_surrogate(RC_SURROGATE), points=601)


def _central_fd(f, p: torch.Tensor, rel: float = 1e-5) -> torch.Tensor:
    """Central finite differences of a scalar function of one design vector (relative steps)."""
    g = torch.zeros_like(p)
    for k in range(p.numel()):
        h = rel * abs(float(p[k]))
        pp, pm = p.clone(), p.clone()
        pp[k] += h
        pm[k] -= h
        g[k] = (f(pp) - f(pm)) / (2 * h)
    return g


def test_ift_crossing_gradient_analytic():
    """y = 1 - exp(-t / (p0 p1)) crosses 1/2 at t* = p0 p1 ln 2: root and gradient are exact."""
    def fn(t, P):
        tau = P[:, 0] * P[:, 1]
        e = torch.exp(-t / tau)
        return 1 - e, e / tau

    P = torch.tensor([[1.3e3, 0.9e-12], [0.7e3, 1.7e-12]], dtype=torch.float64, requires_grad=True)
    t0 = (P.detach()[:, 0] * P.detach()[:, 1] * math.log(2)) * 1.02     # a 2 % off first guess
    ts = refine_crossings(fn, t0, P, torch.tensor(0.5, dtype=torch.float64), newton_steps=3)
    exact = P[:, 0] * P[:, 1] * math.log(2)
    assert torch.allclose(ts, exact.detach(), rtol=1e-10)
    (g,) = torch.autograd.grad(ts.sum(), P)
    g_exact = torch.stack([P[:, 1] * math.log(2), P[:, 0] * math.log(2)], dim=-1).detach()
    assert torch.allclose(g, g_exact, rtol=1e-8)
    # a row without a crossing stays NaN and gets a zero (finite) gradient
    ts = refine_crossings(fn, torch.tensor([math.nan, float(t0[1])], dtype=torch.float64), P,
                          torch.tensor(0.5, dtype=torch.float64))
    assert math.isnan(float(ts[0].detach())) and math.isfinite(float(ts[1].detach()))
    (g,) = torch.autograd.grad(torch.nan_to_num(ts).sum(), P)
    assert torch.isfinite(g).all() and float(g[0].abs().sum()) == 0.0


@needs_rc
def test_ift_crossing_gradient_on_the_surrogate_matches_fd(rc_eval):
    """dt*/dp of a refined surrogate crossing vs central differences of the refined crossing."""
    sur = rc_eval.surrogate

    def fn(t, P):
        y, ydot = sur.at(t, P, ["v(out)"])
        return y[:, 0], ydot[:, 0]

    level = torch.tensor(0.5, dtype=torch.float64)

    def crossing(p: torch.Tensor) -> torch.Tensor:
        t0 = torch.tensor([0.2e-9 + 0.69 * float(p[0] * p[1])], dtype=torch.float64)
        return refine_crossings(fn, t0, p.unsqueeze(0), level, newton_steps=6)[0]

    p = torch.tensor([1.4e3, 1.2e-12], dtype=torch.float64, requires_grad=True)
    ts = crossing(p)
    y, _ = fn(ts.detach().reshape(1), p.detach().unsqueeze(0))
    assert abs(float(y[0]) - 0.5) < 1e-9                       # a root of the network output
    (g,) = torch.autograd.grad(ts, p)
    with torch.no_grad():
        fd = _central_fd(lambda q: float(crossing(q)), p.detach())
    assert torch.allclose(g, fd, rtol=1e-4), (g, fd)


@needs_rc
@pytest.mark.parametrize("level", [0.5, None], ids=["fixed_level", "auto_level"])
def test_objective_gradient_through_surrogate_matches_fd(rc_eval, level):
    """dJ/dp through the surrogate (IFT crossings, p-dependent auto level) vs central differences of J."""
    meas = Measurement(kind="delay", signal="v(out)", level=level, t_ref=0.205e-9, window=(0.2e-9, 6e-9))
    task = task_from_config({"name": "t", "circuit": "rc", "free": ["r", "c"], "target": 1.1e-9,
                             "measurement": {"kind": "delay", "signal": "v(out)", "level": level,
                                             "t_ref": 0.205e-9, "window": [0.2e-9, 6e-9]}},
                            circuit=rc_eval.circuit)
    assert task.objective.measurement == meas
    obj = task.objective

    def J(p: torch.Tensor) -> torch.Tensor:
        P = p.unsqueeze(0)
        return obj(P, rc_eval.measure(P, obj.measurements()))[0]

    p = torch.tensor([1.6e3, 0.8e-12], dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(J(p), p)
    with torch.no_grad():
        fd = _central_fd(lambda q: float(J(q)), p.detach())
    assert torch.allclose(g, fd, rtol=1e-4), (g, fd)


def _known_rc_task(r_true: float, c_fixed: float):
    """rc_delay with c fixed and r free, aimed at the reference delay of (r_true, c_fixed)."""
    task = load_task("rc_delay", free=["r"], fixed={"c": c_fixed})
    ref = ReferenceEvaluator(task.circuit)
    P = task.space.vector({"r": r_true, "c": c_fixed}).unsqueeze(0)
    with torch.no_grad():
        target = float(ref.measure(P, [task.objective.measurement])[0, 0])
    return load_task("rc_delay", free=["r"], fixed={"c": c_fixed}, target=target), ref


@needs_rc
def test_gradient_search_recovers_a_known_rc_design(rc_eval):
    task, ref = _known_rc_task(r_true=1300.0, c_fixed=1.1e-12)
    res, checks = corrected_search(task, lambda t: gradient_search(t, rc_eval, prescreen=64, starts=4),
                                   ref, rounds=2)
    with torch.no_grad():
        achieved = float(ref.measure(res.design.unsqueeze(0), [task.objective.measurement])[0, 0])
    assert abs(achieved / task.target - 1) <= task.tolerance
    assert task.params(res.design)["r"] == pytest.approx(1300.0, rel=2 * task.tolerance)
    assert task.params(res.design)["c"] == 1.1e-12
    assert len(checks) <= 3 and res.calls > 0


@needs_rc
def test_newton_retarget_makes_the_smallest_move_that_hits_the_target(rc_eval):
    """Output space mapping's correction step: from u0, a 4 % longer delay is reached by a move
    along ∂delay/∂u whose length is |Δdelay| / |∂delay/∂u| (the linearised minimum-norm step)."""
    task = load_task("rc_delay")
    u0 = torch.tensor([0.4, 0.55], dtype=torch.float64)
    meas = [task.objective.measurement]
    leaf = u0.clone().requires_grad_(True)
    m0 = rc_eval.measure(task.designs(leaf.unsqueeze(0)), meas)[0, 0]
    (g,) = torch.autograd.grad(m0, leaf)
    shifted = retarget(task, 1.04 * float(m0))
    res = newton_retarget(shifted, rc_eval, u0, stop_fraction=0.05)
    assert res.converged and abs(res.rel_error) <= 0.05 * task.tolerance
    with torch.no_grad():
        hit = float(rc_eval.measure(res.design.unsqueeze(0), meas)[0, 0])
    assert hit == pytest.approx(1.04 * float(m0), rel=0.05 * task.tolerance)
    move = res.u_free - u0
    assert float(move.norm()) == pytest.approx(0.04 * float(m0) / float(g.norm()), rel=0.15)
    assert float(move.dot(g) / (move.norm() * g.norm())) > 0.98  # g is ~1e-9 s: no eps-clamped cosine
    # beyond the box: it stops at the bound, unconverged, and reports the value it reached
    far = newton_retarget(retarget(task, 100 * float(m0)), rc_eval, u0)
    assert not far.converged and far.value < 100 * float(m0) and bool((far.u_free == 1.0).all())


def test_optuna_recovers_a_known_rc_design(tmp_path):
    task, ref = _known_rc_task(r_true=800.0, c_fixed=1.5e-12)
    journal = f"journal:{tmp_path / 'study.log'}"
    res = optuna_search(task, ReferenceEvaluator(task.circuit), n_trials=80, seed=1, storage=journal)
    with torch.no_grad():
        achieved = float(ref.measure(res.design.unsqueeze(0), [task.objective.measurement])[0, 0])
    assert abs(achieved / task.target - 1) <= task.tolerance
    assert task.params(res.design)["r"] == pytest.approx(800.0, rel=2 * task.tolerance)
    assert res.converged and res.calls <= 80
    # a second worker on the same journal and study name continues the study
    again = optuna_search(task, ReferenceEvaluator(task.circuit), n_trials=2, seed=2, storage=journal,
                          stop_fraction=0.0)
    assert again.extra["trials_in_study"] == res.extra["trials_in_study"] + 2


@needs_rc
def test_surrogate_sensitivities_match_the_differentiable_reference(rc_eval):
    """d ln(delay)/d ln(p) through the surrogate vs through the differentiable reference solver (~1 for r and c)."""
    task = load_task("rc_delay")
    meas = [task.objective.measurement]
    p = task.space.vector({"r": 1200.0, "c": 1.3e-12})
    sens = []
    for ev in (rc_eval, ReferenceEvaluator(task.circuit)):
        P = p.clone().unsqueeze(0).requires_grad_(True)
        m = ev.measure(P, meas)[0, 0]
        (g,) = torch.autograd.grad(m, P)
        sens.append(g[0] * p / m.detach())
    assert torch.allclose(sens[0], sens[1], rtol=0.05, atol=0.0), sens


def test_unknown_parameter_in_a_task_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown parameter"):
        load_task("rc_delay", free=["r", "nosuch"])
    with pytest.raises(ConfigError, match="unknown task"):
        load_task("nosuch")
    with pytest.raises(ConfigError, match="measurement kind"):
        load_task("rc_delay", measurement={"kind": "bandwidth", "signal": "v(out)"})


def test_task_designs_map_the_unit_cube_like_the_param_space_with_finite_gradients():
    """Linear and log parameters land where ParamSpace.from_unit puts them; d(design)/du is finite."""
    for name in ("amp_gain", "rc_delay", "ring5_freq"):
        task = load_task(name)
        u = torch.rand(6, len(task.free), dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        u.requires_grad_(True)
        P = task.designs(u)
        assert torch.allclose(P.detach(), task.space.from_unit(u.detach()), rtol=1e-12)
        assert torch.allclose(task.unit_free(P.detach()), u.detach(), atol=1e-12)
        (g,) = torch.autograd.grad(P.sum(), u)
        assert torch.isfinite(g).all() and (g > 0).all()
