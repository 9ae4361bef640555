"""Reliability under faults: atomic checkpoints, exact resume after a kill, NaN devices named."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

import circuits
from circuits.circuit import load_circuit
from circuits.devices.base import Device, DeviceEval, register, two_terminal
from circuits.errors import ConvergenceError, NeuroSpiceError
from surrogate.checkpoint_io import AtomicCheckpointIO
from surrogate.train import run_train

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = str(ROOT / "configs")
TINY = ["circuit=rc", "recipe=manual", "surrogate.target_nrmse=1", "surrogate.target_median_nrmse=1", "trainer.enable_progress_bar=false", "model.width=8", "model.depth=1",
        "surrogate.designs_per_batch=4", "surrogate.times_per_design=8", "surrogate.val_designs=2",
        "surrogate.val_points=21"]


def compose_train(overrides: list[str]):
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def leftovers(folder: Path) -> list[str]:
    """Temporary files of interrupted atomic writes."""
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# --------------------------------------------------------------------------------------------------
# atomic checkpoints


def test_interrupted_checkpoint_write_keeps_the_previous_file(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    target = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"global_step": 1, "w": torch.arange(5.0)}, target)
    before = target.read_bytes()
    real_save = torch.save

    def dies_half_way(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")  # what a zip-format torch.save starts with
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(OSError, match="disk full"):
        io.save_checkpoint({"global_step": 2, "w": torch.zeros(5)}, target)
    monkeypatch.setattr(torch, "save", real_save)
    assert target.read_bytes() == before
    assert io.load_checkpoint(target)["global_step"] == 1
    assert leftovers(target.parent) == []  # the partial temp file was removed
    io.save_checkpoint({"global_step": 3, "w": torch.ones(5)}, target)
    assert io.load_checkpoint(target)["global_step"] == 3
    assert oct(target.stat().st_mode & 0o777) != oct(0o600)  # usual permissions, not mkstemp's


def test_sigkill_during_a_checkpoint_write_leaves_the_previous_checkpoint(tmp_path):
    """A process killed (SIGKILL: no cleanup at all) in the middle of writing last.ckpt."""
    target = tmp_path / "last.ckpt"
    script = f"""
import os, signal, torch
from surrogate.checkpoint_io import AtomicCheckpointIO
io = AtomicCheckpointIO()
io.save_checkpoint({{"global_step": 100, "w": torch.arange(1000.0)}}, {str(target)!r})
def killed_half_way(obj, f, *a, **k):
    f.write(b"PK\\x03\\x04" + bytes(5000)); f.flush()
    os.kill(os.getpid(), signal.SIGKILL)
torch.save = killed_half_way
io.save_checkpoint({{"global_step": 200, "w": torch.zeros(1000)}}, {str(target)!r})
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    ckpt = torch.load(target, weights_only=False)
    assert ckpt["global_step"] == 100 and torch.equal(ckpt["w"], torch.arange(1000.0))
    # the half-written temp file is left (SIGKILL allows no cleanup) but is hidden and not a .ckpt
    partial = leftovers(tmp_path)
    assert len(partial) == 1 and partial[0].startswith(".last.ckpt.")
    assert sorted(p.name for p in tmp_path.glob("*.ckpt")) == ["last.ckpt"]


def test_training_killed_mid_run_resumes_exactly(tmp_path, monkeypatch):
    """A run dies at step 17 (last checkpoint at 14, mid-epoch, during a failed checkpoint write);
    resuming from its last.ckpt gives bit-for-bit the network of the uninterrupted run."""
    import surrogate.module as sm

    overrides = TINY + ["trainer.max_steps=30", "surrogate.checkpoint_every=7", "surrogate.batches_per_epoch=12",
                        "trainer.check_val_every_n_epoch=1"]
    cfg = compose_train(overrides)
    full = run_train(cfg, tmp_path / "full")

    step = sm.PinnModule.training_step
    real_save = torch.save
    saves = []

    def dies_at_step_17(self, batch, batch_idx):
        if self.global_step == 17:
            raise RuntimeError("killed at step 17")
        return step(self, batch, batch_idx)

    def save_fails_at_step_14_last(obj, f, *args, **kwargs):
        # the step-14 write of last.ckpt dies half way: last.ckpt must stay the step-7 one ...
        name = getattr(f, "name", str(f))
        if isinstance(obj, dict) and obj.get("global_step") == 14 and ".last.ckpt." in name:
            saves.append(name)
            f.write(b"garbage")
            raise OSError("killed while writing")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(sm.PinnModule, "training_step", dies_at_step_17)
    monkeypatch.setattr(torch, "save", save_fails_at_step_14_last)
    with pytest.raises(OSError, match="killed while writing"):
        run_train(cfg, tmp_path / "killed")
    monkeypatch.setattr(torch, "save", real_save)
    ckdir = tmp_path / "killed" / "checkpoints"
    assert saves and leftovers(ckdir) == []
    assert torch.load(ckdir / "last.ckpt", weights_only=False)["global_step"] == 7
    assert not (tmp_path / "killed" / "metrics.json").exists()

    # ... and a second attempt that gets past step 14 dies at step 17: last.ckpt is the step-14 one
    with pytest.raises(RuntimeError, match="killed at step 17"):
        run_train(cfg, tmp_path / "killed2")
    monkeypatch.setattr(sm.PinnModule, "training_step", step)
    last = tmp_path / "killed2" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == 14

    resumed = run_train(compose_train(overrides + [f"ckpt_path={last}"]), tmp_path / "resumed")
    assert resumed["steps"] == full["steps"] == 30
    a = torch.load(tmp_path / "full" / "surrogate.pt", weights_only=False)["state_dict"]
    b = torch.load(tmp_path / "resumed" / "surrogate.pt", weights_only=False)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["nrmse_worst_overall"] == full["nrmse_worst_overall"]


def _train_cmd(outdir: Path, *extra: str) -> list[str]:
    return [sys.executable, str(ROOT / "scripts" / "train.py"), "circuit=rc", "recipe=manual",
            "surrogate.target_nrmse=1", "surrogate.target_median_nrmse=1", "trainer.enable_progress_bar=false",
            "model.width=16", "model.depth=2", "surrogate.designs_per_batch=8", "surrogate.times_per_design=32",
            "surrogate.lr=1e-2", "surrogate.val_designs=8", "surrogate.val_points=101", "trainer.max_steps=600",
            "surrogate.checkpoint_every=25", f"hydra.run.dir={outdir}", *extra]


def _kill_when_checkpointed(cmd: list[str], outdir: Path, sig: int, min_step: int):
    """Start a training run, send `sig` once a checkpoint at >= min_step exists.

    Returns (step of the last checkpoint, exit status, stderr)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 600
        while time.time() < deadline and proc.poll() is None:
            steps = [int(p.stem.split("step=")[1]) for p in (outdir / "checkpoints").glob("epoch=*-step=*.ckpt")
                     ] if (outdir / "checkpoints").is_dir() else []
            if steps and max(steps) >= min_step:
                proc.send_signal(sig)
                break
            time.sleep(0.02)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (outdir / "metrics.json").exists(), "the run finished before it could be killed"
    return torch.load(outdir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"], proc.returncode, err


@pytest.mark.slow  # ~35-55 s each on 2 busy cores: three training processes of 600 steps
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_train_script_killed_and_resumed_reaches_the_uninterrupted_accuracy(tmp_path, sig):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    full_dir, killed_dir, resumed_dir = tmp_path / "full", tmp_path / "killed", tmp_path / "resumed"
    killed_at, status, err = _kill_when_checkpointed(_train_cmd(killed_dir), killed_dir, sig, min_step=100)
    # SIGKILL may land between the step-N checkpoint file and last.ckpt: last.ckpt is then the
    # previous complete one (step N - 25), never a partial file
    assert 75 <= killed_at < 600
    if sig == signal.SIGKILL:
        assert status == -signal.SIGKILL
    else:  # Lightning alone would exit with status 0 here; run_train makes it a one-line failure
        lines = [line for line in err.splitlines() if line.startswith("error:")]
        assert status == 2 and "Traceback" not in err, err[-2000:]
        assert len(lines) == 1 and "training stopped by SIGTERM at step" in lines[0]
        assert f"resume with ckpt_path={killed_dir / 'checkpoints' / 'last.ckpt'}" in lines[0]
    assert not list((killed_dir / "checkpoints").glob("*.tmp"))  # nothing half-written to trust
    for cmd in (_train_cmd(full_dir),
                _train_cmd(resumed_dir, f"ckpt_path={killed_dir / 'checkpoints' / 'last.ckpt'}")):
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
    full = json.loads((full_dir / "metrics.json").read_text())
    resumed = json.loads((resumed_dir / "metrics.json").read_text())
    print(f"\n{signal.Signals(sig).name} at step {killed_at}: final worst NRMSE uninterrupted "
          f"{full['nrmse_worst_overall']:.6e}, resumed {resumed['nrmse_worst_overall']:.6e}; "
          f"median {full['nrmse_median_overall']:.6e} vs {resumed['nrmse_median_overall']:.6e}")
    assert resumed["steps"] == full["steps"] == 600
    # the resumed run replays the same collocation batches from the checkpointed step with the
    # restored Adam and LR-schedule state, so on one machine it is the same computation: equal to
    # float rounding (1e-6 relative allows a different summation order; measured: identical)
    for key in ("nrmse_worst_overall", "nrmse_median_overall"):
        assert resumed[key] == pytest.approx(full[key], rel=1e-6)


# --------------------------------------------------------------------------------------------------
# NaN in a device model


@register
class _NanAfterResistor(Device):
    """Test device: a resistor whose current is NaN after `tnan` (or always, tnan < 0, or poisoned)."""

    poisoned = ""  # tests: "always" or "t>0"
    letter = "n"
    model_types = ("nan_after_test",)
    instance_params = {"r": 1e3, "tnan": 1e-9}

    def evaluate(self, v, s, t, p, ctx=None):
        i = (v[..., 0] - v[..., 1]) / p["r"]
        t = t.reshape(-1, 1) if t.dim() == 1 else t
        if type(self).poisoned:
            bad = torch.ones_like(i, dtype=torch.bool) if type(self).poisoned == "always" else t > 0
            return DeviceEval(i=two_terminal(torch.where(bad, torch.full_like(i, float("nan")), i)))
        return DeviceEval(i=two_terminal(torch.where(t > p["tnan"], torch.full_like(i, float("nan")), i)))


NAN_NETLIST = """rc with a device that breaks
.param r=1k c=1p
V1 in 0 PULSE(0 1 0.2n 10p 10p 4n 10n)
R1 in mid {r}
NBAD mid out badmodel r=1 tnan=TNAN
.model badmodel nan_after_test
C1 out 0 {c}
.tran 1p 6n
.end
"""


def nan_circuit(tmp_path: Path, tnan: str):
    path = tmp_path / "nan.cir"
    path.write_text(NAN_NETLIST.replace("TNAN", tnan))
    return load_circuit(path)


@pytest.mark.parametrize("designs", [1, 3], ids=["shared-steps", "per-design-steps"])
def test_nan_device_in_the_transient_is_named(tmp_path, designs):
    c = nan_circuit(tmp_path, "1n")
    with pytest.raises(ConvergenceError) as err:
        circuits.simulate_batch(c, [{}] * designs)
    msg = str(err.value)
    assert "device nbad (model badmodel) returned a non-finite current (nan) at t=1e-09 s" in msg, msg
    assert "\n" not in msg and isinstance(err.value, NeuroSpiceError)


def test_nan_device_in_the_operating_point_is_named(tmp_path):
    c = nan_circuit(tmp_path, "-1")
    with pytest.raises(ConvergenceError, match=r"DC operating point: device nbad \(model badmodel\) returned "
                                               r"a non-finite current \(nan\) at t=0 s, design 0"):
        circuits.simulate(c, {})


def test_nan_device_user_error_is_one_line(tmp_path, capsys):
    from circuits.cli import user_errors

    c = nan_circuit(tmp_path, "1n")
    with pytest.raises(SystemExit) as exit_:
        user_errors(circuits.simulate)(c, {})
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "device nbad" in err and "Traceback" not in err


def _nan_train_cfg(tmp_path: Path, tnan: str):
    from omegaconf import OmegaConf

    cfg = compose_train(TINY + ["trainer.max_steps=5", "surrogate.fixed_params=true"])
    OmegaConf.update(cfg, "circuit.netlist", NAN_NETLIST.replace("TNAN", tnan))
    return cfg


def test_training_a_circuit_with_a_nan_device_fails_before_training(tmp_path):
    """The held-out reference solve runs first: its error names the device; nothing is written."""
    with pytest.raises(ConvergenceError, match="device nbad .* non-finite current"):
        run_train(_nan_train_cfg(tmp_path, "1n"), tmp_path / "run")
    assert not (tmp_path / "run" / "surrogate.pt").exists()


@pytest.mark.parametrize("poison", ["t>0", "always"])
def test_nan_device_during_training_stops_with_a_clear_error(tmp_path, monkeypatch, poison):
    """The device turns NaN once Adam starts (as it would where only the network goes: the reference
    solves at setup pass). NaN for t > 0 only: the residual loss term is named (TrainingDiverged);
    NaN everywhere: the initial-state solve of the first step names the device. Nothing is written."""
    import surrogate.module as sm

    def start_poisoning(self):
        monkeypatch.setattr(_NanAfterResistor, "poisoned", poison)

    monkeypatch.setattr(sm.PinnModule, "on_train_start", start_poisoning, raising=False)
    if poison == "t>0":
        expected = pytest.raises(sm.TrainingDiverged, match=r"step 0: loss term 'residual' is nan \(device nbad "
                                                            r"\(model badmodel\) returned a non-finite current")
    else:
        expected = pytest.raises(ConvergenceError, match=r"DC operating point: device nbad \(model badmodel\) "
                                                         r"returned a non-finite current")
    with expected:
        run_train(_nan_train_cfg(tmp_path, "1"), tmp_path / "run")
    assert _NanAfterResistor.poisoned == poison
    assert not (tmp_path / "run" / "surrogate.pt").exists()
    assert not (tmp_path / "run" / "metrics.json").exists()


@pytest.mark.slow  # ~40 s: the default recipe's planning and window 0's Adam, then a few seconds of its L-BFGS
def test_sigterm_inside_a_windows_optimiser_stops_the_run_within_seconds(tmp_path):
    """Lightning looks at SIGTERM between batches only, and a window's L-BFGS runs for up to a
    minute inside one batch hook: the run went on to the window's end.  Now it stops within one
    loss evaluation, with the one-line error that says how to resume."""
    outdir = tmp_path / "run"
    cmd = [sys.executable, str(ROOT / "scripts" / "train.py"), "circuit=rc", "trainer.enable_progress_bar=false",
           f"hydra.run.dir={outdir}"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        log = outdir / "train.log"
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None and not (
                log.exists() and "window 0: L-BFGS on" in log.read_text()):
            time.sleep(0.1)
        time.sleep(3.0)  # inside window 0's L-BFGS (tens of seconds)
        assert proc.poll() is None, "the run ended before it could be signalled"
        proc.send_signal(signal.SIGTERM)
        signalled = time.time()
        _, err = proc.communicate(timeout=120)
        took = time.time() - signalled
    finally:
        if proc.poll() is None:
            proc.kill()
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(lines) == 1 and "training stopped by SIGTERM" in lines[0], err[-2000:]
    assert "window 0: L-BFGS residual" not in log.read_text()  # it did not wait for the window's end
    assert took < 15.0, f"{took:.1f} s from SIGTERM to exit"
    assert not (outdir / "metrics.json").exists()
