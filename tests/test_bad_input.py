"""Every bad command line is one `error: ...` line with exit status 2 (tests/cli_cases.py): no traceback,
no half-written output, and no code from a surrogate file runs. All cases run in one Python process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli_cases import HYDRA_SCRIPTS, ROOT, SLOW_OPTIMIZE, cases, make_fixtures


def run_table(tmp: Path, table: list[tuple[str, list[str], object]]) -> list[dict]:
    """Run the cases through tests/cli_runner.py in one subprocess; one result per case."""
    todo = []
    for i, (script, args, expected) in enumerate(table):
        env = dict(a.split("=", 1) for a in args if a.startswith("NGSPICE="))
        args = [a for a in args if not a.startswith("NGSPICE=")]
        if script in HYDRA_SCRIPTS and not any(a.startswith("hydra.run.dir=") for a in args):
            args = args + [f"hydra.run.dir={tmp}/runs/{i}"]
        todo.append({"script": script, "args": args, "env": env, "cwd": str(tmp / "cwd"),
                     "expected": expected})
    (tmp / "cases.json").write_text(json.dumps(todo))
    subprocess.run([sys.executable, str(ROOT / "tests" / "cli_runner.py"), str(ROOT), str(tmp / "cases.json"),
                    str(tmp / "results.json")], check=True, timeout=1500, env={**__import__("os").environ,
                                                                              "OMP_NUM_THREADS": "1"})
    return json.loads((tmp / "results.json").read_text())


def problems(r: dict) -> list[str]:
    """What is wrong with one result against its expectation (empty: as expected)."""
    out = []
    err = r["stderr"].strip()
    if "Traceback" in r["stderr"] or "HYDRA_FULL_ERROR" in r["stderr"]:
        out.append("traceback/Hydra report")
    exp = r["expected"]
    if isinstance(exp, str):
        if r["code"] != 2:
            out.append(f"exit {r['code']} (expected 2)")
        lines = err.splitlines()
        if len(lines) != 1 or not lines[0].startswith("error: "):
            out.append(f"{len(lines)} stderr lines, not one 'error: ...' line")
        if exp[len("error: "):] not in err:
            out.append(f"message lacks {exp[len('error: '):]!r}")
        run_dir = next((a.split("=", 1)[1] for a in r["args"] if a.startswith("hydra.run.dir=")), None)
        if run_dir and Path(run_dir).is_dir():
            written = [p.name for p in Path(run_dir).iterdir() if p.name not in (".hydra",) and not p.name.endswith(".log")]
            if written:
                out.append(f"half-written output {written}")
    elif r["code"] != exp:
        out.append(f"exit {r['code']} (expected {exp})")
    return out


@pytest.fixture(scope="module")
def table_results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad_input")
    fixtures = make_fixtures(tmp / "files")
    results = run_table(tmp, cases(fixtures))
    return results, fixtures


def test_the_table_has_at_least_100_cases(table_results):
    assert len(table_results[0]) >= 100


def test_every_bad_command_line_is_one_error_line(table_results):
    results, _ = table_results
    bad = {f"{r['script']} {' '.join(r['args'][:3])}": problems(r) for r in results if problems(r)}
    assert not bad, "\n".join(f"{k}: {v}" for k, v in bad.items())


def test_a_surrogate_file_with_code_in_it_never_runs_it(table_results):
    _, fixtures = table_results
    assert not Path(fixtures["pwned_marker"]).exists()


@pytest.mark.slow
def test_unreachable_targets_and_failed_verification_exit_nonzero_with_the_reason(tmp_path):
    fixtures = make_fixtures(tmp_path / "files")
    table = [("optimize", ["task=rc_delay", "progress=false", *[a.format(**{k.replace('.', '_'): v for k, v in
                                                                           fixtures.items()}) for a in args]], code)
             for args, code, _ in SLOW_OPTIMIZE]
    results = run_table(tmp_path, table)
    for r, (_, _, text) in zip(results, SLOW_OPTIMIZE):
        assert not problems(r), (r["args"], problems(r), r["stderr"][-500:])
        assert text in r["stdout"], r["stdout"][-800:]
        assert "Traceback" not in r["stderr"]
