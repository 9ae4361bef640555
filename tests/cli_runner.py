"""Run many command-line cases of the scripts in ONE Python process (torch, Hydra imported once).

Usage: python tests/cli_runner.py ROOT CASES.json RESULTS.json
Each case is {"script": "simulate", "args": [...], "cwd": DIR}; each result adds "code", "stdout",
"stderr". A case runs as ``python scripts/<script>.py ARGS`` would: ``sys.argv`` set, the file run as
``__main__``; an exception that escapes the script is printed as Python prints it (exit code 1).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import runpy
import sys
import traceback
from pathlib import Path


def run_case(root: Path, script: str, args: list[str], cwd: str, env: dict | None = None) -> dict:
    """Run one script invocation in this process; return its exit code, stdout and stderr."""
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    out, err = io.StringIO(), io.StringIO()
    path = root / "scripts" / f"{script}.py"
    saved_argv, saved_path, saved_cwd = sys.argv[:], sys.path[:], os.getcwd()
    env_before = dict(os.environ)
    os.environ.update(env or {})
    sys.argv = [str(path), *args]
    sys.path.insert(0, str(path.parent))
    code = 0
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                runpy.run_path(str(path), run_name="__main__")
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
                if exc.code is not None and not isinstance(exc.code, int):
                    print(exc.code, file=sys.stderr)
            except BaseException:  # noqa: BLE001 - what Python would print for an uncaught exception
                traceback.print_exc()
                code = 1
    finally:
        os.chdir(saved_cwd)
        sys.argv, sys.path[:] = saved_argv, saved_path
        os.environ.clear()
        os.environ.update(env_before)
        GlobalHydra.instance().clear()
    return {"code": code, "stdout": out.getvalue(), "stderr": err.getvalue()}


def main(argv: list[str]) -> None:
    """Run every case of a JSON file and write the results next to them."""
    root, cases_path, results_path = Path(argv[0]).resolve(), Path(argv[1]), Path(argv[2])
    sys.path.insert(0, str(root))
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    cases = json.loads(cases_path.read_text())
    results = []
    for case in cases:
        Path(case["cwd"]).mkdir(parents=True, exist_ok=True)
        results.append({**case, **run_case(root, case["script"], case["args"], case["cwd"], case.get("env"))})
        results_path.write_text(json.dumps(results, indent=1))  # partial results survive a timeout


if __name__ == "__main__":
    main(sys.argv[1:])
