"""Run tests/cli_cases.py against an older checkout (before) and this tree (after); write docs/bad_input.md."""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.cli_cases import HYDRA_SCRIPTS, SLOW_OPTIMIZE, cases, make_fixtures  # noqa: E402

RUNNER = ROOT / "tests" / "cli_runner.py"
#: run before the runner: the checkout under test must be the one imported (the venv's editable install
#: points at this tree, so PYTHONPATH has to win over it)
BOOT = ("import runpy, sys; from pathlib import Path; import circuits; "
        "root = Path(sys.argv[2]).resolve(); where = Path(circuits.__file__).resolve(); "
        "where.is_relative_to(root) or sys.exit(f'circuits imported from {where}, not from {root}'); "
        "print(f'circuits from {where}', flush=True); "
        "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")
#: stderr lines that are logging or progress, not the report (not counted, never the last line shown)
NOISE = ("INFO:", "[", "gradient", "transient")
HEADER = """# Bad input: before and after (issue 20)

Every command line of `tests/cli_cases.py` (the default suite runs them all in one process:
`tests/test_bad_input.py`; the four inverse-design runs at the end are `slow`), run at commit {label}
(before) and after the issue-20 commits, through `tests/cli_runner.py` (as `python scripts/X.py ARGS`).
Regenerate: `git worktree add /tmp/wt_{label} {label}`, then
`OMP_NUM_THREADS=1 python scripts/bad_input_table.py --before-root /tmp/wt_{label} --out docs/bad_input.md`
(about 25 minutes on two cores, most of it the old `train.py` runs that are killed).

Cases run: before {n_before}, after {n_after};
tracebacks or Hydra multi-line reports: before {tb_before}, after {tb_after}.{killed}
Code inside `pickle_code.pt` ran (it creates a marker file when unpickled): before {pwned_before}, after {pwned_after}.

| # | case | before ({label}) | after |
|---|------|------------------|-------|
"""


def table(fixtures: dict[str, str]) -> list[tuple[str, list[str], object]]:
    """Every case of the table, the slow inverse-design runs last (as tests/test_bad_input.py runs them)."""
    names = {k.replace(".", "_"): v for k, v in fixtures.items()}
    slow = [("optimize", ["task=rc_delay", "progress=false", *[a.format(**names) for a in args]], code)
            for args, code, _ in SLOW_OPTIMIZE]
    return cases(fixtures) + slow


def build(tmp: Path, root: Path) -> tuple[list[dict], dict[str, str]]:
    """The runner's cases for one checkout (as `run_table` builds them), fixtures written under ``tmp``."""
    fixtures = make_fixtures(tmp / "files")
    todo = []
    for i, (script, args, expected) in enumerate(table(fixtures)):
        env = dict(a.split("=", 1) for a in args if a.startswith("NGSPICE="))
        args = [a for a in args if not a.startswith("NGSPICE=")]
        added = script in HYDRA_SCRIPTS and not any(a.startswith("hydra.run.dir=") for a in args)
        if added:
            args = args + [f"hydra.run.dir={tmp}/runs/{i}"]
        todo.append({"script": script, "args": args, "env": env, "cwd": str(tmp / "cwd"), "expected": expected,
                     "shown_args": args[:-1] if added else args,
                     "exists": (root / "scripts" / f"{script}.py").is_file()})
    return todo, fixtures


def read_results(path: Path) -> list[dict]:
    """The results the runner has written so far (it rewrites the file after every case)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return []


def run_side(tmp: Path, root: Path, timeout: float, memory_gb: float) -> tuple[list[dict | None], dict[str, str]]:
    """Run every case against ``root`` in one process; a case running over ``timeout`` s is killed, the rest go on.

    The process gets ``memory_gb`` of address space: an old checkout that fills memory (a PULSE source with 4e11
    corners) stops with MemoryError instead of taking a shared machine's memory."""
    todo, fixtures = build(tmp, root)
    results: list[dict | None] = [None] * len(todo)
    pending = [i for i, c in enumerate(todo) if c["exists"]]
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(root), *filter(None, [os.environ.get("PYTHONPATH")])])}
    limit = int(memory_gb * 2**30)

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    part = 0
    while pending:
        part += 1
        cases_path, results_path = tmp / f"cases{part}.json", tmp / f"results{part}.json"
        cases_path.write_text(json.dumps([todo[i] for i in pending]))
        with open(tmp / f"runner{part}.log", "w") as log:
            proc = subprocess.Popen([sys.executable, "-c", BOOT, str(RUNNER), str(root), str(cases_path),
                                     str(results_path)], env=env, cwd=tmp, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True, preexec_fn=limited)
            done, since = 0, time.monotonic()
            try:
                while proc.poll() is None:
                    time.sleep(1)
                    now = len(read_results(results_path))
                    if now > done:
                        done, since = now, time.monotonic()
                    elif time.monotonic() - since > timeout:
                        break
            finally:  # SIGKILL: an old train.py catches SIGTERM and goes on
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        got = read_results(results_path)[:len(pending)]
        log = (tmp / f"runner{part}.log").read_text()
        if f"circuits from {root}/" not in log:
            sys.exit(f"the runner did not import the checkout {root}:\n{log[-2000:]}")
        for i, r in zip(pending, got):
            results[i] = r
        if len(got) < len(pending):  # the case after the last result was killed, or took the process down
            why = {"killed": timeout} if proc.returncode == -signal.SIGKILL else {"died": proc.returncode}
            results[pending[len(got)]] = {**todo[pending[len(got)]], **why}
            got.append(None)
        pending = pending[len(got):]
        print(f"{root}: {sum(r is not None for r in results)} of {len(todo)} cases done", file=sys.stderr)
    return results, fixtures


def neutral(text: str, tmp: Path, fixtures: dict[str, str], roots: list[Path]) -> str:
    """``text`` with fixture files as their names, this run's temporary directories as <tmp>, checkouts dropped."""
    for path in sorted(set(fixtures.values()), key=len, reverse=True):
        text = text.replace(path, Path(path).name)
    text = text.replace(str(tmp), "<tmp>")
    for root in roots:
        text = text.replace(f"{root}/", "")
    text = re.sub(re.escape(tempfile.gettempdir()) + r"/[\w.-]+", "<tmp>", text)
    return text.replace("|", "/")


def is_traceback(r: dict | None) -> bool:
    """Whether a case printed a Python traceback or Hydra's multi-line error report."""
    return r is not None and "code" in r and ("Traceback" in r["stderr"] or "HYDRA_FULL_ERROR" in r["stderr"])


def cell(r: dict | None, clean: Callable[[str], str]) -> str:
    """One table cell: exit status, traceback or not, stderr line count and the last line."""
    if r is None:
        return "script did not exist"
    if "killed" in r:
        return f"no exit within {r['killed']:g} s (killed)"
    if "died" in r:
        return f"the process died (status {r['died']})"
    lines = [ln for ln in re.sub(r"\r[^\n]*", "", r["stderr"]).splitlines() if ln.strip() and not ln.startswith(NOISE)]
    last = lines[-1] if lines else (r["stdout"].strip().splitlines() or [""])[-1]
    return (f"exit {r['code']}, {'TRACEBACK, ' if is_traceback(r) else ''}{len(lines)} line(s): "
            f"`{clean(last)[:110]}`")


def case_text(c: dict, clean: Callable[[str], str]) -> str:
    """The case column: NGSPICE=NAME if set, the script and its arguments (without the added hydra.run.dir)."""
    env = [f"{k}={Path(v).name}" for k, v in c["env"].items()]
    return clean(" ".join([*env, c["script"], *c["shown_args"]]))


def render(before: list[dict | None], after: list[dict | None], sides: dict, label: str, timeout: float) -> str:
    """The whole markdown file."""
    def cleaner(side: str) -> Callable[[str], str]:
        tmp, fixtures = sides[side]
        return lambda text: neutral(text, tmp, fixtures, sides["roots"])

    killed = [sum(1 for r in rs if r is not None and "killed" in r) for rs in (before, after)]
    pwned = ["yes" if Path(sides[side][1]["pwned_marker"]).exists() else "no" for side in ("before", "after")]
    text = HEADER.format(
        label=label, n_before=sum(r is not None for r in before), n_after=sum(r is not None for r in after),
        tb_before=sum(map(is_traceback, before)), tb_after=sum(map(is_traceback, after)),
        killed=(f"\nKilled after {timeout:g} s without exiting: before {killed[0]}, after {killed[1]}."
                if any(killed) else ""), pwned_before=pwned[0], pwned_after=pwned[1])
    rows = []
    for i, (b, a) in enumerate(zip(before, after)):
        rows.append(f"| {i + 1} | {case_text(a, cleaner('after'))} | {cell(b, cleaner('before'))} | "
                    f"{cell(a, cleaner('after'))} |")
    return text + "\n".join(rows) + "\n"


def later_sections(doc: Path) -> str:
    """The sections after the table (## headings, e.g. scripts/fuzz_netlists.py's), kept when it is rewritten."""
    old = doc.read_text() if doc.exists() else ""
    at = old.find("\n## ")
    return old[at:] if at >= 0 else ""


def main() -> None:
    """Run both sides and write the markdown table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--before-root", type=Path, required=True,
                        help="checkout of the baseline commit (git worktree add /tmp/wt_eec2800 eec2800)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "bad_input.md", help="markdown file to write")
    parser.add_argument("--label", help="name of the baseline in the table (default: its short commit hash)")
    parser.add_argument("--timeout", type=float, default=120,
                        help="seconds a case may run without finishing before it is killed")
    parser.add_argument("--memory-gb", type=float, default=6, help="address-space limit of the runner process")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory with the raw results")
    args = parser.parse_args()
    before_root = args.before_root.resolve()
    if not (before_root / "scripts").is_dir():
        parser.error(f"--before-root {before_root}: not a checkout (no scripts/)")
    label = args.label or subprocess.run(["git", "-C", str(before_root), "rev-parse", "--short=7", "HEAD"],
                                         capture_output=True, text=True, check=True).stdout.strip()
    work = Path(tempfile.mkdtemp(prefix="bad_input_table_"))
    try:
        before, fx_before = run_side(work / "before", before_root, args.timeout, args.memory_gb)
        after, fx_after = run_side(work / "after", ROOT, args.timeout, args.memory_gb)
        sides = {"before": (work / "before", fx_before), "after": (work / "after", fx_after),
                 "roots": [before_root, ROOT]}
        args.out.write_text(render(before, after, sides, label, args.timeout) + later_sections(args.out))
        (work / "before.json").write_text(json.dumps(before, indent=1))
        (work / "after.json").write_text(json.dumps(after, indent=1))
    finally:
        if args.keep:
            print(f"raw results in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
