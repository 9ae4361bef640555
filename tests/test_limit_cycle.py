"""Limit-cycle window (model.periodic_from): construction, exact periodicity, plumbing, bad input."""

from __future__ import annotations

import pytest
import torch

from circuits import load_circuit
from circuits.circuit import circuit_from_config
from surrogate.api import Surrogate, SurrogateError
from surrogate.time_scale import TimeScaleError
from tests.test_surrogate import (assert_batch_matches_pointwise_and_round_trips,
                                  assert_gradient_matches_central_differences)
from tests.test_time_scale import RC_DISCHARGE

PERIOD = 0.98e-9  # any time unit will do for the plumbing; training measures the nominal design's


@pytest.fixture(scope="module")
def cycle_model() -> Surrogate:
    torch.manual_seed(4)
    model = Surrogate(load_circuit("ring5"), width=12, depth=2, windows=3, periodic_from=1e-9,
                      period=PERIOD, dtype="float64")
    with torch.no_grad():  # a frequency that varies over the box, as after training
        model.nets[-1].log_frequency[-1].weight.normal_(0.0, 0.3)
    return model


def test_edges_are_start_up_windows_then_one_cycle_window(cycle_model):
    assert cycle_model.windows == 3
    assert torch.allclose(cycle_model.edges, torch.tensor([0.0, 0.5e-9, 1e-9, 4e-9], dtype=torch.float64))


def assert_continuous_at_the_cycle_start(m: Surrogate, P: torch.Tensor) -> None:
    """The learned unknowns just before and at the limit-cycle window's start agree (to 1e-9)."""
    B = P.shape[0]
    with torch.no_grad():
        edge = float(m.edges[-2])
        t = torch.tensor([edge * (1 - 1e-13), edge], dtype=torch.float64).repeat(B)
        x = m.state(t, P.repeat_interleave(2, dim=0))[:, m.learned_idx].view(B, 2, -1)
    assert (x[:, 0] - x[:, 1]).abs().max() < 1e-9


def test_cycle_window_is_continuous_and_exactly_periodic(cycle_model):
    """The cycle starts at the last start-up window's end state and repeats every period/F(p)."""
    m = cycle_model
    P = m.circuit.space.sample_sobol(4)
    learned = m.learned_idx
    assert_continuous_at_the_cycle_start(m, P)
    with torch.no_grad():
        freq = m.nets[-1].frequency(m.circuit.space.to_unit(P)).squeeze(1)
        assert float(freq.max() / freq.min()) > 1.05  # the designs really run at different speeds
        cycle = PERIOD / freq
        t1 = torch.full((4,), 1.7e-9, dtype=torch.float64)
        a = m.state(t1, P)[:, learned]
        b = m.state(t1 + cycle, P)[:, learned]
        c = m.state(t1 + 0.37 * cycle, P)[:, learned]
    assert (a - b).abs().max() < 1e-9
    assert (a - c).abs().max() > 1e-4  # but not constant


def test_cycle_rate_matches_finite_differences_of_the_state(cycle_model):
    m = cycle_model
    P = m.circuit.space.sample_sobol(3)
    t = torch.tensor([1.3e-9, 2.2e-9, 3.9e-9], dtype=torch.float64)
    with torch.no_grad():
        _, xdot, _ = m.state(t, P, with_rate=True)
        h = 1e-15
        fd = (m.state(t + h, P) - m.state(t - h, P)) / (2 * h)
    learned = m.learned_idx
    assert torch.allclose(xdot[:, learned], fd[:, learned], rtol=1e-6, atol=1e-6 * float(fd.abs().max()))


def test_cycle_model_batch_pointwise_round_trip_and_gradient(cycle_model, tmp_path):
    assert_batch_matches_pointwise_and_round_trips(cycle_model, 41, tmp_path / "cycle.pt")
    # the cycle's frequency F(p) and its start state both depend on p
    assert_gradient_matches_central_differences(cycle_model, torch.tensor([0.7e-9, 3.1e-9], dtype=torch.float64),
                                                [11e-15, 1.2e-6, 2.5e-6])


@pytest.mark.parametrize("kwargs, match", [
    ({"windows": 1, "periodic_from": 1e-9}, "windows >= 2"),
    ({"windows": 3, "periodic_from": 5e-9}, "periodic_from must lie"),
    ({"window_edges": [1e-9], "periodic_from": 1e-9}, "window_edges"),
])
def test_bad_limit_cycle_settings_are_one_line_errors(kwargs, match):
    with pytest.raises(SurrogateError, match=match):
        Surrogate(load_circuit("ring5"), width=8, depth=1, period=PERIOD, **kwargs)


def test_limit_cycle_needs_an_autonomous_oscillating_circuit():
    with pytest.raises(SurrogateError, match="autonomous"):  # rc has a PULSE source
        Surrogate(load_circuit("rc"), width=8, depth=1, windows=2, periodic_from=1e-9)
    with pytest.raises(TimeScaleError, match="does not oscillate"):  # the nominal period is measured
        Surrogate(circuit_from_config(RC_DISCHARGE), width=8, depth=1, windows=2, periodic_from=1e-9)


def test_settling_start_is_continuous_has_the_right_rate_and_becomes_periodic():
    """periodic_settle > 0: x = scale·y(c) + (start − scale·y(0))·exp(−n/settle) leaves the start
    state continuously, its rate is d/dt of the state, and it settles onto the periodic orbit."""
    torch.manual_seed(5)
    m = Surrogate(load_circuit("ring5"), width=12, depth=2, windows=3, periodic_from=1e-9, period=PERIOD,
                  periodic_settle=0.25, dtype="float64")
    P = m.circuit.space.sample_sobol(3)
    learned = m.learned_idx
    assert_continuous_at_the_cycle_start(m, P)
    with torch.no_grad():
        tq = torch.tensor([1.1e-9, 1.6e-9, 3.3e-9], dtype=torch.float64)
        _, xdot, _ = m.state(tq, P, with_rate=True)
        h = 1e-15
        fd = (m.state(tq + h, P) - m.state(tq - h, P)) / (2 * h)
        assert torch.allclose(xdot[:, learned], fd[:, learned], rtol=1e-6, atol=1e-6 * float(fd.abs().max()))
        freq = m.nets[-1].frequency(m.circuit.space.to_unit(P)).squeeze(1)
        early, late = torch.full((3,), 1.05e-9, dtype=torch.float64), torch.full((3,), 3.0e-9, dtype=torch.float64)
        gap = lambda t0: (m.state(t0 + PERIOD / freq, P) - m.state(t0, P))[:, learned].abs().max()  # noqa: E731
        assert float(gap(late)) < 1e-3 * float(gap(early))  # exp(−2 cycles / 0.25) = 3e-4


def test_check_cycle_accepts_the_shipped_cycle_and_flags_a_collapsed_one():
    """The shipped ring5 cycle agrees with its own start-up windows' last period; a cycle flattened to
    its start state (what a collapse onto the DC point looks like between jumps) does not."""
    from surrogate.api import load_surrogate
    from surrogate.module import CYCLE_MISMATCH_LIMIT, PinnModule
    from pathlib import Path

    shipped = load_surrogate(Path(__file__).resolve().parent.parent / "pretrained" / "ring5.pt")
    module = PinnModule(dict(shipped.circuit.config), dict(shipped.hparams_net), val_designs=1, val_points=11)
    module.model.nets.load_state_dict(shipped.nets.state_dict())
    last = module.windows - 1
    assert module.check_cycle(last, seed=3) < CYCLE_MISMATCH_LIMIT / 10
    with torch.no_grad():
        out = module.model.nets[last].cycle.mlp[-1]
        out.weight.zero_()
    assert module.check_cycle(last, seed=3) > 10 * CYCLE_MISMATCH_LIMIT
