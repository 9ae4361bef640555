"""Gather every run of a sweep into one table: python scripts/collect.py multirun/train/<date> [output=table.csv]"""

import sys
from pathlib import Path

from circuits.cli import user_errors
from circuits.config_check import check_output_file
from circuits.errors import ConfigError

USAGE = "usage: python scripts/collect.py DIR [output=FILE.csv|FILE.parquet]  (default: DIR/table.csv)"


@user_errors
def main(argv: list[str]) -> None:
    from surrogate.collect import collect

    opts = dict(a.split("=", 1) for a in argv if "=" in a)
    dirs = [a for a in argv if "=" not in a]
    unknown = set(opts) - {"output"}
    if len(dirs) != 1 or unknown:
        raise ConfigError(f"{'unknown option ' + ', '.join(sorted(unknown)) + '; ' if unknown else ''}{USAGE}")
    output = opts.get("output") or str(Path(dirs[0]) / "table.csv")
    problem = check_output_file(output) if Path(dirs[0]).is_dir() else None
    if problem:  # checked before reading every run, not after
        raise ConfigError(f"output={output}: {problem}")
    frame, path = collect(dirs[0], opts.get("output"))
    done = int((frame["status"] == "ok").sum())
    print(f"{len(frame)} runs ({done} complete, {len(frame) - done} incomplete) -> {path}")
    cols = [c for c in ("run", "status", "circuit", "seed", "trainer.max_steps", "nrmse_median_overall",
                        "nrmse_worst_overall", "train_time_s") if c in frame.columns]
    print(frame[cols].to_string(index=False))


if __name__ == "__main__":
    main(sys.argv[1:])
