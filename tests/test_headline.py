"""The headline measurement a circuit config declares, measured on the reference and a surrogate."""

from __future__ import annotations

import math

import pytest
import torch

from circuits.circuit import load_circuit
from circuits.errors import ConfigError
from surrogate.headline import Headline, headline_spec, relative_errors


def test_relative_errors_count_a_measurement_found_in_only_one_waveform_as_infinite():
    m = torch.tensor([1.01, math.nan, 2.0, math.nan])
    ref = torch.tensor([1.0, 1.0, math.nan, math.nan])
    rel = relative_errors(m, ref)
    assert rel[0] == pytest.approx(0.01) and math.isinf(rel[1]) and math.isinf(rel[2]) and rel[3] == 0.0


def test_amp_declares_its_gain_and_the_reference_measures_the_configs_nominal_gain():
    """configs/task/amp_gain.yaml: the reference's gain at the nominal design is 2.44; a surrogate
    that returns the reference's own waveforms has no error."""
    amp = load_circuit("amp")
    assert headline_spec(amp) == ("amp_gain", 0.01)
    P = amp.space.nominal_vector().unsqueeze(0)
    t = torch.linspace(0.0, amp.tstop, 1001, dtype=torch.float64)
    headline = Headline.draw(amp, P, t)
    assert float(headline.ref[0]) == pytest.approx(2.44, abs=0.01)

    from circuits.simulation import simulate_batch

    class Exact:  # predicts the reference solver's waveforms
        def predict_batch(self, t, P, outputs=None):
            return simulate_batch(amp, P, t=t, outputs=outputs, rtol=1e-5)[1]

    assert float(headline.errors(Exact(), P, t)[0]) < 1e-9


def test_a_malformed_headline_is_a_config_error():
    amp = load_circuit("amp")
    amp.config = {**amp.config, "headline": {"task": "amp_gain", "target": -1}}
    with pytest.raises(ConfigError, match="positive"):
        headline_spec(amp)
    amp.config = {**amp.config, "headline": "amp_gain"}
    with pytest.raises(ConfigError, match="headline must be"):
        headline_spec(amp)
