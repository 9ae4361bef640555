"""The solver's linear/nonlinear split of a bound DAE reproduces the assembled DAE exactly."""

from __future__ import annotations

import pytest
import torch

from circuits import load_circuit
from circuits.dae import assemble
from circuits.split import SplitDAE


@pytest.mark.parametrize("B", [5, 1])  # one design: the unit probes go through one batched call
@pytest.mark.parametrize("name", ["rc", "amp", "ring5", "feram"])
def test_split_matches_assembled_dae(name, B):
    circuit = load_circuit(name)
    dae = assemble(circuit)
    bound = dae.bind(circuit.space.sample_sobol(B, seed=3))
    split = SplitDAE(bound)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(B, dae.size, generator=g, dtype=torch.float64) * 2 - 0.2
    t = torch.rand(B, generator=g, dtype=torch.float64) * circuit.tstop  # inside source ramps too
    q, f = bound.evaluate(x, t)
    q_s, f_s = split.evaluate(x, t)
    assert torch.allclose(q_s, q, rtol=1e-12, atol=1e-30) and torch.allclose(f_s, f, rtol=1e-12, atol=1e-18)
    assert torch.allclose(split.charges(x, t), q, rtol=1e-12, atol=1e-30)
    _, _, jq, jf = bound.jacobians(x, t)
    jq_s, jf_s = split.jacobians(x, t)
    # the assembled DAE's linear-device Jacobians are forward differences (~1e-9 relative rounding
    # next to a source value); the split's come from unit steps, exact to rounding
    assert torch.allclose(jq_s, jq, rtol=1e-7, atol=1e-30) and torch.allclose(jf_s, jf, rtol=1e-7, atol=1e-18)
    # the split really moved the linear devices out of the per-iteration evaluation
    assert split.linear and all(dae.groups[k].device.linear for k in split.linear)
    assert (name == "rc") == (not split.nonlinear)
