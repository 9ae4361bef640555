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
