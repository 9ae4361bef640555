"""Every Hydra config composes, and every circuit config loads into a valid Circuit."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from circuits.circuit import CONFIG_DIR, circuit_from_config
from circuits.errors import ConfigError

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
CIRCUITS = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


@pytest.mark.parametrize("variant, overrides", [
    ("plain", []), ("windowed", ["model.window_edges=[1e-9,2e-9]"]),
])
def test_model_sampler_and_phase_configs_instantiate(variant, overrides):
    """`_target_` configs build the model variant, the sampler and every training phase for a circuit."""
    from surrogate.callbacks import TrainToTarget, WindowSchedule
    from tests.surrogate_helpers import build_run

    module, schedule, callbacks = build_run(["circuit=rc", f"model={variant}", "model.width=8", "model.depth=1",
                                             "surrogate.val_designs=1", "surrogate.val_points=11", *overrides])
    assert module.model.kind == variant and module.model.windows == (1 if variant == "plain" else 3)
    assert isinstance(callbacks[0], WindowSchedule) and isinstance(callbacks[-1], TrainToTarget)
    assert module.sampler.designs_per_batch == 32 and module.sampler.lbfgs_designs == 32  # null: an Adam batch's


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
    # the window holds about four periods for every N: ring5's 4 ns, 0.8 ns more per stage
    assert circuit_from_config({**base, "stages": 5}).tstop == pytest.approx(4e-9)
    assert circuit_from_config({**base, "stages": 21}).tstop == pytest.approx(16.8e-9)
    with pytest.raises(ConfigError, match="odd number"):
        circuit_from_config({**base, "stages": 4})
