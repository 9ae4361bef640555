"""Every Hydra config composes, and every circuit config loads into a valid Circuit."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from circuits.circuit import CONFIG_DIR, circuit_from_config
from circuits.errors import ConfigError

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
EXPERIMENTS = sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml"))
CIRCUITS = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes(experiment):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"experiment={experiment}"])
    assert cfg.trainer.max_steps > 0 and cfg.circuit.name
    if experiment == "ring5_causal":  # experiment values win over train.yaml's defaults
        assert cfg.surrogate.fixed_params and cfg.surrogate.causal_eps == 100.0 and cfg.model.fourier == 8


@pytest.mark.parametrize("circuit", CIRCUITS)
def test_circuit_configs_build(circuit):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="simulate", overrides=[f"circuit={circuit}"])
    c = circuit_from_config(OmegaConf.to_container(cfg.circuit, resolve=True))
    assert c.outputs and c.tstop > 0
    assert set(c.space.names) <= set(c.netlist.params)


def test_ring_generator_stages_and_bad_stage_count():
    base = {"name": "ring", "generator": "ring", "params": {}}
    assert len(circuit_from_config({**base, "stages": 7}).outputs) == 7
    with pytest.raises(ConfigError, match="odd number"):
        circuit_from_config({**base, "stages": 4})
