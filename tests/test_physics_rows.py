"""The PINN residual's rows dq/dt + f against the same rows from every device group's charges."""

from __future__ import annotations

import pytest
import torch

from circuits.circuit import load_circuit
from surrogate.physics import CircuitPhysics


@pytest.mark.parametrize("name", ["amp", "feram"])
def test_rows_skip_chargeless_groups_and_give_the_same_bits(name: str) -> None:
    """rows() takes dq/dt only from the groups that hold charge; the result is bit-for-bit the
    central difference over every group (amp's MOSFET, feram's MOSFET and sources hold none)."""
    circuit = load_circuit(name)
    physics = CircuitPhysics(circuit)
    N = 64
    bound = physics.bind(circuit.space.sample_uniform(N, torch.Generator().manual_seed(0)))
    gen = torch.Generator().manual_seed(1)
    n = bound.dae.size
    x = torch.rand(N, n, generator=gen, dtype=torch.float64) * 1.8
    xdot = torch.randn(N, n, generator=gen, dtype=torch.float64) * 1e9
    t = torch.rand(N, generator=gen, dtype=torch.float64) * circuit.tstop
    charged: list[int] = []
    bound.evaluate(x, t, charged=charged)
    assert 0 < len(charged) < len(bound.dae.groups)
    rate = (xdot.abs() / physics.layout.x_scale).amax(dim=1, keepdim=True)
    eps = 1e-4 / rate
    every_group = ((bound.evaluate(x + eps * xdot, t)[0] - bound.evaluate(x - eps * xdot, t)[0]) / (2 * eps)
                   + bound.evaluate(x, t)[1])
    assert torch.equal(physics.rows(bound, x, xdot, t), every_group)
