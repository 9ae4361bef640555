"""Device models: analytic Jacobians vs finite differences, MOSFET vs ngspice's operating point."""

from __future__ import annotations

import pytest
import torch

import circuits.devices  # noqa: F401
from circuits.devices.base import Device, device_for_letter, device_for_model_type


def _mos_defaults(shape: tuple[int, ...]) -> dict:
    """Every MOSFET parameter at its device default (NaN: not given)."""
    dev = device_for_model_type("nmos")
    return {k: torch.full(shape, float(v), dtype=torch.float64)
            for k, v in {**dev.model_params, **dev.instance_params}.items()}


def mos_params(polarity: float, n: int, caps: bool) -> dict:
    g = torch.Generator().manual_seed(0)
    r = lambda lo, hi: lo + (hi - lo) * torch.rand(3, n, generator=g, dtype=torch.float64)  # noqa: E731
    return {**_mos_defaults((3, n)), "level": torch.ones(3, n), "vto": polarity * r(0.3, 0.7), "kp": r(50e-6, 200e-6),
            "gamma": r(0.0, 0.6), "phi": r(0.5, 0.8), "lambda": r(0.0, 0.1), "ld": r(0.0, 0.02e-6),
            "cgso": r(0, 1e-10) * caps, "cgdo": r(0, 1e-10) * caps, "cgbo": r(0, 1e-10) * caps,
            "w": r(1e-6, 4e-6), "l": r(0.2e-6, 1e-6), "m": torch.ones(3, n, dtype=torch.float64),
            "polarity": torch.full((3, n), polarity, dtype=torch.float64)}


@pytest.mark.parametrize("polarity", [1.0, -1.0])
@pytest.mark.parametrize("caps", [False, True])
def test_mosfet_analytic_jacobian_matches_finite_differences(polarity, caps):
    dev = device_for_model_type("nmos" if polarity > 0 else "pmos")
    n = 400  # random terminal voltages cover cutoff, linear, saturation, reverse mode, vbs > 0
    v = (torch.rand(3, n, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64) - 0.3) * 3
    s = v.new_zeros(3, n, 0)
    p = mos_params(polarity, n, caps)
    out, jf, jq = dev.local_jacobian(v, s, 0.0, p)
    ref_out, jf_fd, jq_fd = Device.local_jacobian(dev, v, s, 0.0, dict(p))
    # the Jacobian path (drain_current) and evaluate's op-lean path (_drain_current_only) agree
    assert torch.allclose(out.i, ref_out.i)
    scale = jf_fd.abs().amax() + 1e-12
    # forward differences straddle a region boundary for a few samples; compare where both agree on region
    close = (jf - jf_fd).abs() <= 1e-5 * scale
    assert close.float().mean() > 0.99
    assert torch.allclose(jq, jq_fd, atol=1e-6 * float(jq_fd.abs().amax() + 1e-30))


def test_mosfet_saturation_current_matches_ngspice_op():
    """ngspice 39 op of nch (vto=0.5 kp=200u lambda=0.05), W/L=2u/0.2u, vgs=1, vds=1.8: id=2.725e-4
    (plus the reverse bulk-drain junction's gmin * 1.8 V + IS, 2e-12 A)."""
    dev = device_for_model_type("nmos")
    p = _mos_defaults((1, 1))
    p |= {k: torch.tensor([[val]], dtype=torch.float64) for k, val in
         {"vto": 0.5, "kp": 200e-6, "gamma": 0.0, "phi": 0.6, "lambda": 0.05, "ld": 0.0, "cgso": 0.0,
          "cgdo": 0.0, "cgbo": 0.0, "w": 2e-6, "l": 0.2e-6, "m": 1.0, "polarity": 1.0}.items()}
    v = torch.tensor([[[1.8, 1.0, 0.0, 0.0]]], dtype=torch.float64)
    out = dev.evaluate(v, v.new_zeros(1, 1, 0), 0.0, p)
    assert float(out.i[0, 0, 0]) == pytest.approx(2.725e-4 + 1e-12 * 1.8 + 1e-14, rel=1e-12)


@pytest.mark.parametrize("letter", ["r", "c"])
def test_linear_two_terminal_jacobians(letter):
    dev = device_for_letter(letter)
    v = torch.randn(2, 3, 2, dtype=torch.float64)
    p = {"value": torch.full((2, 3), 2.0, dtype=torch.float64), "ic": torch.zeros(2, 3, dtype=torch.float64),
         "m": torch.ones(2, 3, dtype=torch.float64), "scale": torch.ones(2, 3, dtype=torch.float64)}
    _, jf, jq = dev.local_jacobian(v, v.new_zeros(2, 3, 0), 0.0, p)
    g = 0.5 if letter == "r" else 2.0
    expected = torch.tensor([[g, -g], [-g, g]], dtype=torch.float64).expand(2, 3, 2, 2)
    assert torch.allclose(jf if letter == "r" else jq, expected, rtol=1e-6)
