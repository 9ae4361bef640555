"""Gather every run of a sweep into one table: python scripts/collect.py multirun/train/<date> [output=table.csv]"""

import sys

from circuits.cli import user_errors
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
    frame, path = collect(dirs[0], opts.get("output"))
    done = int((frame["status"] == "ok").sum())
    print(f"{len(frame)} runs ({done} complete, {len(frame) - done} incomplete) -> {path}")
    cols = [c for c in ("run", "status", "circuit", "seed", "trainer.max_steps", "nrmse_median_overall",
                        "nrmse_worst_overall", "train_time_s") if c in frame.columns]
    print(frame[cols].to_string(index=False))


if __name__ == "__main__":
    main(sys.argv[1:])
