"""Torch functions replayed as numpy traces give torch's results bit for bit (circuits.numpy_trace,
circuits.dense_devices)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from circuits import load_circuit
from circuits.dae import assemble
from circuits.dense_devices import NumpyDevices
from circuits.limiting import Limiter
from circuits.numpy_trace import Traced
from circuits.split import SplitDAE

CORPUS = Path(__file__).parent / "data" / "corpus"


def test_trace_folds_parameters_and_guards_branches():
    p = torch.tensor([0.5, 2.0], dtype=torch.float64)
    calls = []

    def fn(x):
        calls.append(1)
        scale = torch.exp(p).sum()  # parameters alone: folded
        y = torch.where(x > 0, torch.log(x.clamp(min=1e-3)), x * scale) ** 3
        if torch.equal(y, x):  # a data-dependent branch: a guard
            return x, None
        return y, torch.stack((x, -y), -1)

    traced = Traced(fn, ("x",))
    for values in ([0.3, -1.0, 4.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [2.0, -3.0, 0.5]):
        x = np.array(values)
        got, want = traced(x), fn(torch.from_numpy(x))
        if want[1] is None:  # the input itself comes back
            assert got[0] is x and got[1] is None
        else:
            assert np.array_equal(got[0], want[0].numpy()) and np.array_equal(got[1], want[1].numpy())
    assert len(traced.paths) == 2 and traced.untraceable is None


def test_untraceable_function_runs_in_torch():
    def fn(x):
        return x * float(x.sum())  # a float taken from the input cannot be replayed

    traced = Traced(fn, ("x",))
    x = np.array([1.0, 2.0])
    assert np.array_equal(traced(x), [3.0, 6.0]) and np.array_equal(traced(x * 2), [12.0, 24.0])
    assert traced.untraceable and not traced.paths


@pytest.mark.parametrize("deck", ["sia_diode_halfwave", "ng_rtl_inverters", "ng_inv_level6", "ng_vdmos_inv",
                                  "ng_mos_amp_level2", "las_bcd_counter_bsource", "ng_ddt_rc", "ng_fft_bsource_sine",
                                  "ring5", "feram"])
def test_numpy_devices_match_torch_bitwise(deck):
    """Currents, charges and Jacobians of every nonlinear device family of these decks and configs
    (diode, BJT, MOSFET levels 1 (ten in one group: torch's vectorised kernels), 2 and 6, VDMOS,
    B sources with comparisons, ddt and time, ferroelectric), with and without limiting."""
    path = CORPUS / f"{deck}.cir"
    circuit = load_circuit(str(path) if path.exists() else deck)
    bound = assemble(circuit).bind()
    split = SplitDAE(bound)
    devices = NumpyDevices(split)
    n = bound.dae.size
    rng = np.random.default_rng(0)
    for _ in range(40):  # (some kernels round by value: e.g. a fused multiply-add matches on some points only)
        x, t = rng.uniform(-1.0, 5.0, n), float(rng.uniform(0, circuit.tstop))
        with torch.inference_mode():
            q_t, f_t = split.nonlinear_terms(torch.from_numpy(x)[None], torch.tensor([t], dtype=torch.float64))
        assert np.array_equal(devices.terms(x, t)[1], f_t[0].numpy(), equal_nan=True)
    lim_np, lim_torch = Limiter(), Limiter()
    for k in range(6):
        x = rng.uniform(-1.0, 5.0, n) * (0.3 if k % 2 else 1.0)
        t = float(rng.uniform(0, circuit.tstop))
        lim_np.begin()
        lim_torch.begin()
        q, f = devices.terms(x, t, lim_np)
        with torch.inference_mode():
            q_t, f_t = split.nonlinear_terms(torch.from_numpy(x)[None], torch.tensor([t], dtype=torch.float64),
                                             lim_torch)
        assert np.array_equal(f, f_t[0].numpy(), equal_nan=True)
        assert (q is None) == (q_t is None) and (q is None or np.array_equal(q, q_t[0].numpy(), equal_nan=True))
        assert lim_np.active == lim_torch.active
        jq, jf = devices.jacobians(x, t, lim_np)  # where the iteration above linearised
        with torch.inference_mode(), lim_torch.frozen():
            jq_t, jf_t = split.jacobians(torch.from_numpy(x)[None], torch.tensor([t], dtype=torch.float64), lim_torch)
        assert np.array_equal(split.C[0].numpy() + jq, jq_t[0].numpy(), equal_nan=True)
        assert np.array_equal(split.G[0].numpy() + jf, jf_t[0].numpy(), equal_nan=True)
    assert all(ev.untraceable is None for *_, ev, _, _ in devices.groups)
