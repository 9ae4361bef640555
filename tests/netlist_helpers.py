"""Small helpers shared by the device tests: parse a netlist body, expect a one-line rejection."""

from __future__ import annotations

import re

import pytest

from circuits.errors import NetlistError
from circuits.netlist import Netlist, parse_netlist


def parse_body(body: str, tail: str = "") -> Netlist:
    """Parse `body` as a netlist with a title line and a `.tran` card (after `tail`)."""
    return parse_netlist("title\n" + body + tail + ".tran 1n 10n\n")


def assert_rejected(body: str, line: int, what: str, tail: str = "") -> None:
    """`body` is rejected with a NetlistError at <string>:line that contains `what`."""
    with pytest.raises(NetlistError, match=rf"<string>:{line}: .*{re.escape(what)}"):
        parse_body(body, tail)


# ngspice itself stops ("timestep too small") on Meyer's capacitances at the default reltol 1e-7
MEYER_NGSPICE_OPTIONS = {"reltol": 1e-6, "abstol": 1e-14, "vntol": 1e-8, "chgtol": 1e-17}


def nrmse_vs_ngspice(deck, outputs: list[str], options: dict | None = None, **simulate_kwargs) -> dict:
    """NRMSE per output (and "worst") of the reference transient of `deck` against ngspice's, on
    ngspice's time points (options: ngspice's .options; simulate_kwargs: e.g. rtol)."""
    import torch

    from circuits import load_circuit, run_ngspice, simulate
    from circuits.measure import compare

    circuit = load_circuit(deck, outputs=outputs)
    ng = run_ngspice(circuit, **({"options": options} if options else {}))
    ref = simulate(circuit, t=torch.tensor(ng.time.to_numpy().copy()), **simulate_kwargs)
    return compare(ng, ref)


def nrmse_vs_ngspice_as_written(path, columns: list[str] | None = None, tight: bool = False) -> dict:
    """NRMSE per column (and "worst") of the reference transient of the deck file `path` against
    ngspice running that file as written (scripts/compat_corpus.py: its `.control` alters before the
    analysis kept), on ngspice's time points; tight: ngspice at TIGHT_OPTIONS.  columns: every node
    voltage ngspice wrote by default."""
    import torch

    from circuits import load_circuit, simulate
    from circuits.measure import compare
    from tests.test_corpus import cc

    ng = cc.run_ngspice_deck(path, options=cc.TIGHT_OPTIONS if tight else None)
    ours = simulate(load_circuit(path), t=torch.tensor(ng.time.to_numpy().copy()))
    return compare(ng, ours, columns=columns or [c for c in ng.columns if c.startswith("v(")])
