"""The bad-input table: command lines of the scripts and what each must print (run by tests/test_bad_input.py).

A case is (script, args, expected): expected "error: TEXT" means exit 2 and exactly one stderr line
``error: ...`` containing TEXT; an int means that exit status. Fixture files live in ``tmp``.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HYDRA_SCRIPTS = ("simulate", "optimize", "train")


def make_fixtures(tmp: Path) -> dict[str, str]:
    """Bad files of every kind the scripts read; returns {name: path}."""
    import torch

    tmp.mkdir(parents=True, exist_ok=True)
    f: dict[str, str] = {}

    def write(name: str, data: bytes | str) -> None:
        p = tmp / name
        p.write_bytes(data if isinstance(data, bytes) else data.encode())
        f[name] = str(p)

    write("bad_element.cir", "title\nR1 a 0 1k\nQ1 a b c npn\n.tran 1n 10n\n.end\n")
    write("latin1.cir", b"titre \xe9\xe8\nR1 a 0 1k\nC1 a 0 1p\nV1 a 0 PULSE(0 1 0 1n 1n 5n 10n)\n.tran 1n 20n\n.end\n")
    write("no_tran.cir", "title\nR1 a 0 1k\nC1 a 0 1p\nV1 a 0 1\n.end\n")
    write("empty.cir", "")
    write("garbage.cir", b"\x00\x01\x02\xff\xfe binary junk\n")
    write("unknown_node_only.cir", "title\n.tran 1n 10n\n.end\n")
    write("bad_value.cir", "title\nR1 a 0 abc\nV1 a 0 1\n.tran 1n 10n\n.end\n")
    write("neg_tran.cir", "title\nR1 a 0 1k\nC1 a 0 1p\nV1 a 0 1\n.tran 1n -10n\n.end\n")
    write("long_pulse.cir", "long\nV1 in 0 PULSE(0 1 0 10p 10p 4n 10n)\nR1 in out 1k\nC1 out 0 1p\n.tran 1p 1e3\n.end\n")
    write("long_dc.cir", "long\nV1 in 0 DC 1\nR1 in out 1k\nC1 out 0 1p\n.tran 1p 1e3\n.end\n")
    square = " ".join(f"{k}n {k % 2}" for k in range(20_000))
    write("pwl20k.cir", f"pwl\nV1 in 0 PWL({square})\nR1 in out 1k\nC1 out 0 1p\n.tran 1n 20u\n.end\n")
    write("rc.cir", "rc\n.param r=1k\nV1 in 0 PULSE(0 1 0.2n 10p 10p 4n 10n)\nR1 in out {r}\nC1 out 0 1p\n.tran 1p 6n\n.end\n")
    folder = tmp / "a_directory"
    folder.mkdir(exist_ok=True)
    f["dir"] = str(folder)
    # surrogate files
    shipped = ROOT / "pretrained" / "rc.pt"
    blob = torch.load(shipped, map_location="cpu", weights_only=True)
    data = shipped.read_bytes()
    write("trunc.pt", data[: len(data) // 2])
    write("text.pt", "not a torch file")
    torch.save({"a": 1}, tmp / "other.pt"); f["other.pt"] = str(tmp / "other.pt")
    torch.save({k: v for k, v in blob.items() if k != "state_dict"}, tmp / "missing.pt")
    f["missing.pt"] = str(tmp / "missing.pt")
    sd = dict(blob["state_dict"])
    first = next(iter(sd))
    sd[first] = torch.zeros(3, 3)
    torch.save({**blob, "state_dict": sd}, tmp / "shape.pt"); f["shape.pt"] = str(tmp / "shape.pt")
    torch.save({**blob, "version": 99}, tmp / "version.pt"); f["version.pt"] = str(tmp / "version.pt")
    write("pickle_code.pt", _code_pickle(tmp / "PWNED"))
    f["pwned_marker"] = str(tmp / "PWNED")
    # fake ngspice executables
    for name, body in {
        "ng_crash": "#!/bin/sh\necho 'Segmentation fault' >&2\nkill -SEGV $$\n",
        "ng_garbage": "#!/bin/sh\nprintf 'garbage\\000\\001 not a raw file\\n' > out.raw\nexit 0\n",
        "ng_header": ("#!/bin/sh\nprintf 'Title: x\\nPlotname: Transient Analysis\\nFlags: real\\n"
                      "No. Variables: 2\\nNo. Points: 10\\nVariables:\\n\\t0\\ttime\\ttime\\n"
                      "\\t1\\tv(out)\\tvoltage\\nBinary:\\n' > out.raw\nexit 0\n"),
        "ng_not_exec": "#!/bin/sh\nexit 0\n",
    }.items():
        write(name, body)
        if name != "ng_not_exec":
            os.chmod(f[name], stat.S_IRWXU)
    sweep = tmp / "sweep"
    (sweep / "0" / ".hydra").mkdir(parents=True, exist_ok=True)
    (sweep / "0" / ".hydra" / "config.yaml").write_text("circuit: {name: rc}\nseed: 0\n")
    f["sweep"] = str(sweep)
    f["empty_sweep"] = str(tmp / "a_directory")
    return f


def _code_pickle(marker: Path) -> bytes:
    """A .pt whose unpickling would create ``marker`` (os.system): must be refused, never run."""
    import io
    import pickle

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    buf = io.BytesIO()
    pickle.dump({"format": "neurospice-surrogate", "x": Payload()}, buf, protocol=2)
    return buf.getvalue()


def cases(f: dict[str, str]) -> list[tuple[str, list[str], str | int]]:
    """Every (script, args, expected) of the table; ``f`` from `make_fixtures`."""
    sim = [
        (["params.r=abc"], "error: params.r=abc"), (["params.r="], "error: params.r="),
        (["params.r=1e9"], "error: outside its range"), (["params.nosuch=1"], "error: nosuch"),
        (["params.r=nan"], "error: params.r=nan"), (["params.r=inf"], "error: params.r=inf"),
        (["params.r=[1,2]"], "error: params.r"), (["params.r=2k"], 0),
        (["solver.rtol=abc"], "error: solver.rtol=abc"), (["solver.rtol=-1"], "error: solver.rtol=-1"),
        (["solver.rtol=0"], "error: solver.rtol=0"), (["solver.rtol=2"], "error: solver.rtol=2"),
        (["solver.max_steps=0"], "error: solver.max_steps=0"), (["solver.max_steps=abc"], "error: solver.max_steps"),
        (["solver.max_steps=10"], "error: circuit=rc[netlist]: the step ceiling 1.2e-10 s needs 50 steps"),
        (["solver.max_steps=55"], "error: circuit=rc[netlist]: transient stopped after solver.max_steps=55"),
        (["ngspice=maybe"], "error: ngspice=maybe"), (["ngspice=1"], "error: ngspice=1"),
        (["seed=abc"], "error: seed"), (["foo=1"], "error: foo"), (["circuit=nosuch"], "error: choices: amp"),
        (["circuit="], "error: circuit"), (["circuit=ring", "circuit.stages=abc"], "error: circuit.stages=abc"),
        (["circuit=ring", "circuit.stages=4"], "error: stages"), (["circuit=ring", "circuit.stages=-3"], "error: circuit.stages=-3"),
        (["circuit=rc", "circuit.tstop=-1"], "error: circuit.tstop=-1"),
        ([f"netlist={f['bad_element.cir']}"], "error: bad_element.cir:3"),
        ([f"netlist={f['no_tran.cir']}"], "error: .tran"), ([f"netlist={f['empty.cir']}"], "error: empty.cir"),
        ([f"netlist={f['garbage.cir']}"], "error: garbage.cir"), ([f"netlist={f['bad_value.cir']}"], "error: bad_value.cir"),
        ([f"netlist={f['neg_tran.cir']}"], "error: neg_tran.cir"), (["netlist=/no/such.cir"], "error: netlist=/no/such.cir"),
        ([f"netlist={f['dir']}"], "error: is a directory"), ([f"netlist={f['latin1.cir']}"], 0),
        ([f"netlist={f['long_pulse.cir']}"], "error: long_pulse.cir: the step ceiling 1e-12 s needs 1e+15 steps"),
        ([f"netlist={f['long_dc.cir']}"], "error: long_dc.cir: the step ceiling 1e-12 s needs 1e+15 steps"),
        ([f"netlist={f['pwl20k.cir']}", "solver.max_steps=10000"], "error: pwl20k.cir: the step ceiling 1e-09 s"),
        (["hydra.run.dir=/proc/neurospice_out"], "error: /proc/neurospice_out"),
        ([f"hydra.run.dir={f['bad_element.cir']}"], "error: bad_element.cir"),
        (["hydra.run.dir=/dev/null/x"], "error: /dev/null"),
        (["--nosuchflag"], 2), (["params.r=1500"], 0),
    ]
    ng = [
        (["circuit=rc", f"NGSPICE={f['ng_crash']}"], "error: ngspice failed"),
        (["circuit=rc", f"NGSPICE={f['ng_garbage']}"], "error: malformed raw file"),
        (["circuit=rc", f"NGSPICE={f['ng_header']}"], "error: truncated or malformed raw file"),
        (["circuit=rc", f"NGSPICE={f['ng_not_exec']}"], "error: NGSPICE="),
        (["circuit=rc", "NGSPICE=/no/such/ngspice"], "error: NGSPICE="),
    ]
    opt = [
        (["seed=abc"], "error: seed=abc"), (["seed=-1"], "error: seed=-1"), (["task.tolerance=abc"], "error: task.tolerance=abc"),
        (["task.tolerance=0"], "error: task.tolerance=0"), (["task.tolerance=-0.1"], "error: task.tolerance"),
        (["task.target=abc"], "error: task.target=abc"), (["task.target="], "error: task.target"),
        (["task.target=nan"], "error: task.target=nan"), (["task=nosuch"], "error: unknown task"),
        (["method=nosuch"], "error: method=nosuch"), (["simulator=nosuch"], "error: simulator=nosuch"),
        (["optuna.n_trials=0", "method=optuna"], "error: optuna.n_trials=0"),
        (["optuna.n_trials=abc", "method=optuna"], "error: optuna.n_trials=abc"),
        (["optuna.storage=foo://bar", "method=optuna"], "error: optuna.storage=foo://bar"),
        (["optuna.storage=sqlite:////proc/x/y.db", "method=optuna"], "error: optuna.storage"),
        (["optuna.n_jobs=0", "method=optuna"], "error: optuna.n_jobs=0"),
        (["optuna.startup_trials=-1", "method=optuna"], "error: optuna.startup_trials=-1"),
        ([f"output={f['dir']}"], "error: is a directory"), (["output=/proc/nosuch/result.json"], "error: output="),
        ([f"output={f['bad_element.cir']}/result.json"], "error: is a file"),
        (["gradient.starts=0"], "error: gradient.starts=0"), (["gradient.starts=-3"], "error: gradient.starts=-3"),
        (["gradient.lr=0"], "error: gradient.lr=0"), (["gradient.points=1"], "error: gradient.points=1"),
        (["gradient.check=maybe"], "error: gradient.check=maybe"), (["gradient.corrections=-1"], "error: gradient.corrections"),
        (["reference_gradient.starts=0"], "error: reference_gradient.starts=0"),
        (["solver.rtol=abc"], "error: solver.rtol=abc"), (["solver.rtol=0"], "error: solver.rtol=0"),
        (["verify.ngspice=maybe"], "error: verify.ngspice=maybe"), (["progress=2"], "error: progress=2"),
        (["range.samples=-1"], "error: range.samples=-1"), (["range.bound_tol=0.7"], "error: range.bound_tol"),
        (["task.fixed.r=abc"], "error: task.fixed.r"), (["task.penalties.x=1"], "error: task.penalties.x=1"),
        (["surrogate=/no/such.pt"], "error: surrogate=/no/such.pt"), ([f"surrogate={f['dir']}"], "error: is a directory"),
        ([f"surrogate={f['trunc.pt']}"], "error: truncated or damaged"), ([f"surrogate={f['text.pt']}"], "error: text.pt"),
        ([f"surrogate={f['other.pt']}"], "error: not a NeuroSPICE surrogate"),
        ([f"surrogate={f['missing.pt']}"], "error: missing state_dict"),
        ([f"surrogate={f['shape.pt']}"], "error: does not match its weights"),
        ([f"surrogate={f['version.pt']}"], "error: format version 99"),
        ([f"surrogate={f['pickle_code.pt']}"], "error: refused without running them"),
        ([f"surrogate={ROOT / 'pretrained' / 'amp.pt'}"], "error: surrogate of circuit 'amp'"),
        (["foo=1"], "error: foo"),
    ]
    train = [
        (["seed=abc"], "error: seed=abc"), (["recipe=maybe"], "error: recipe=maybe"),
        (["surrogate.lr=abc"], "error: surrogate.lr=abc"), (["surrogate.lr=1e30"], "error: surrogate.lr"),
        (["surrogate.designs_per_batch=0"], "error: surrogate.designs_per_batch=0"),
        (["surrogate.times_per_design=-1"], "error: surrogate.times_per_design"),
        (["surrogate.target_nrmse=0"], "error: surrogate.target_nrmse=0"), (["surrogate.budget_min=abc"], "error: surrogate.budget_min"),
        (["surrogate.fixed_params=maybe"], "error: surrogate.fixed_params"),
        (["surrogate.breakpoint_fraction=2"], "error: surrogate.breakpoint_fraction"),
        (["trainer.max_steps=-5"], "error: trainer.max_steps=-5"), (["trainer.max_steps=0"], "error: trainer.max_steps=0"),
        (["trainer.max_steps=abc"], "error: trainer.max_steps"), (["trainer.accelerator=tpu9"], "error: trainer.accelerator"),
        (["circuit=nosuch"], "error: choices: amp"), (["experiment=nosuch"], "error: experiment"),
        (["trainer=nosuch"], "error: unknown trainer option"), (["circuit=ring", "circuit.stages=abc"], "error: circuit.stages=abc"),
        (["ckpt_path=/no/such.ckpt"], "error: ckpt_path=/no/such.ckpt"), ([f"ckpt_path={f['trunc.pt']}"], "error: ckpt_path="),
        ([f"ckpt_path={f['pickle_code.pt']}"], "error: ckpt_path="), ([f"ckpt_path={f['dir']}"], "error: is a directory"),
        ([f"ckpt_path={ROOT / 'pretrained' / 'rc.pt'}"], "error: not a NeuroSPICE training checkpoint"),
        ([f"netlist={f['bad_element.cir']}"], "error: bad_element.cir:3"), ([f"netlist={f['rc.cir']}", "space.nosuch=[1,2]"], "error: space.nosuch"),
        ([f"netlist={f['rc.cir']}", "space.r=[2k,1k]"], "error: space.r"), ([f"netlist={f['rc.cir']}", "space.r=abc"], "error: space.r"),
        (["hydra.run.dir=/proc/neurospice_out"], "error: /proc/neurospice_out"), (["foo=1"], "error: foo"),
    ]
    collect = [
        ([], "error: usage"), (["/no/such/dir"], "error: no such directory"), ([f["empty_sweep"]], "error: no Hydra runs"),
        ([f["sweep"], f"output={f['dir']}"], "error: is a directory"), ([f["sweep"], "output=x.txt"], "error: .csv or .parquet"),
        ([f["sweep"], "foo=1"], "error: unknown option foo"), ([f["sweep"], "a", "b"], "error: usage"),
    ]
    bench = [  # the benchmark and validation scripts share the one error boundary
        ("bench_surrogate", ["eval", "/no/such.pt"], "error: no such surrogate file"),
        ("bench_surrogate", ["eval", f["other.pt"]], "error: "),
        ("bench_reference", ["--circuit", "nosuch"], "error: unknown circuit 'nosuch'"),
        ("bench_design", ["--tasks", "nosuch"], "error: unknown task 'nosuch'"),
        ("validate_reference", ["--circuit", "nosuch"], "error: unknown circuit 'nosuch'"),
    ]
    out: list[tuple[str, list[str], str | int]] = []
    out += [("simulate", ["circuit=rc", "ngspice=false", *a], e) for a, e in sim]
    out += [("simulate", a, e) for a, e in ng]
    out += [("optimize", ["task=rc_delay", *a], e) for a, e in opt]
    out += [("train", a, e) for a, e in train]
    out += [("collect", a, e) for a, e in collect]
    out += bench
    return out


#: slow inverse-design cases (each runs a search): (args, expected exit, text in stdout)
SLOW_OPTIMIZE = [
    (["task.target=0"], 3, "OUT OF RANGE"),
    (["task.target=1e99"], 3, "OUT OF RANGE"),
    (["task.target=1.2e-9", "verify.reference=false", "NGSPICE={ng_crash}"], 4, "NOT VERIFIED"),
    (["task.target=1.2e-9", "verify.reference=false", "NGSPICE={ng_garbage}"], 4, "NOT VERIFIED"),
]
