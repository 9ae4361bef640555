"""`train.py netlist=PATH space.NAME=[LOW,HIGH(,log)]`: any netlist's .params become the design space."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from circuits.circuit import circuit_from_config, netlist_config
from circuits.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
DECK = ROOT / "tests" / "data" / "rlc_pulse.cir"


def test_space_takes_spice_numbers_log_ranges_and_the_netlists_own_nominal():
    cfg = netlist_config(DECK, {"r": ["20", "100"], "c": ["0.5p", "2p", "log"], "l": [20e-9, 40e-9]})
    circuit = circuit_from_config(cfg, source=str(DECK))
    assert circuit.space.names == ["r", "c", "l"]
    r, c, l = circuit.space.params
    assert (r.low, r.high, r.log, r.nominal) == (20.0, 100.0, False, 50.0)  # .param r=50
    assert (c.low, c.high, c.log) == (0.5e-12, 2e-12, True) and c.nominal == pytest.approx(1e-12)
    assert l.nominal == pytest.approx(30e-9)  # the netlist's 10n is outside: the range's midpoint
    assert circuit.outputs == ["v(in)", "v(a)", "v(b)"]  # every node voltage
    assert netlist_config(DECK, outputs=["b", "V(a)"])["outputs"] == ["v(b)", "v(a)"]
    assert "PULSE" in cfg["netlist"]  # embedded: the surrogate file does not need the deck


@pytest.mark.parametrize("space, message", [
    ({"nosuch": [1, 2]}, "space.nosuch: not a .param of the netlist (its .params: r, l, c)"),
    ({"r": [100, 50]}, "space.r: LOW 100 must be < HIGH 50"),
    ({"c": ["-1p", "2p", "log"]}, "space.c: a log range needs LOW > 0"),
    ({"r": ["abc", 5]}, "space.r: bound 'abc' is not a number"),
    ({"r": [1, 2, "lin"]}, "space.r: expected [LOW,HIGH] or [LOW,HIGH,log]"),
])
def test_a_bad_space_is_one_line_naming_the_file_and_the_parameter(space, message):
    with pytest.raises(ConfigError) as err:
        netlist_config(DECK, space)
    text = str(err.value)
    assert text.startswith(f"{DECK}: ") and message in text and "\n" not in text


def test_the_script_rejects_a_bad_space_in_one_line_with_exit_2(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"), f"netlist={DECK}",
                           "space.r=[100,50]", f"hydra.run.dir={tmp_path}"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == f"error: {DECK}: space.r: LOW 100 must be < HIGH 50"
    assert not (tmp_path / "surrogate.pt").exists()


def test_a_netlist_trains_over_its_space_and_the_file_loads_without_the_deck(tmp_path):
    from surrogate import load_surrogate
    from surrogate.train import run_train

    overrides = [f"netlist={DECK}", "+space.r=[30,80]", "+space.c=[0.5p,2p,log]", "recipe=manual",
                 "outputs=[b]", "trainer.max_steps=20", "model.width=8", "model.depth=1",
                 "surrogate.designs_per_batch=4", "surrogate.times_per_design=16", "surrogate.val_designs=2",
                 "surrogate.val_points=31", "trainer.enable_progress_bar=false", "surrogate.target_nrmse=1", "surrogate.target_median_nrmse=1"]
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    metrics = run_train(cfg, tmp_path)
    assert metrics["circuit"] == "rlc_pulse" and metrics["target_met"] is True
    model = load_surrogate(tmp_path / "surrogate.pt")
    assert model.circuit.space.names == ["r", "c"] and model.circuit.outputs == ["v(b)"]
    with torch.no_grad():
        y = model.predict_batch(None, model.circuit.space.sample_sobol(3, seed=1))
    assert y.shape == (3, 501, 1) and bool(torch.isfinite(y).all())
