"""Fuzzed netlists through the whole front end, and fuzzed config values through the schemas and
Hydra's parser: only ever a one-line user error (NeuroSpiceError or a Hydra message), never a crash."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hydra import compose, initialize_config_dir
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from circuits.circuit import load_circuit
from circuits.cli import CONFIG_DIR, user_error_message
from circuits.config_check import OPTIMIZE, SIMULATE, TRAIN, check_config
from circuits.dae import assemble
from circuits.errors import ConfigError, NeuroSpiceError

RC = """rc low-pass with a diode clamp
.param r=1k c=1p
V1 in 0 PULSE(0 1 0.2n 10p 10p 4n 10n)
R1 in out {r}
C1 out 0 {c}
D1 out 0 dmod
.model dmod d is=1e-14
.ic v(out)=0
.tran 1p 6n
.end
"""
_TOKENS = sorted({t for line in RC.splitlines() for t in line.split()} |
                 {"0", "-1", "1e999", "{1/0}", "abc", "(", ")", "=", ".tran", ".param", "PWL(0", "SIN(0", "nan",
                  "m1", "x1", ".subckt", ".ends", "dc", "1meg", "v(out)", ".include", "/etc/passwd", "\x00"})
_DIR = Path(tempfile.mkdtemp(prefix="bad_input_fuzz_"))
_MANY = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def load_or_user_error(text: str) -> None:
    """Load the text as a .cir file and build its equations: success or one-line NeuroSpiceError."""
    path = _DIR / "fuzz.cir"
    path.write_text(text, encoding="utf-8", errors="surrogateescape")
    try:
        circuit = load_circuit(path)
        assemble(circuit)
    except NeuroSpiceError as exc:
        assert str(exc).strip() and "\n" not in str(exc), repr(str(exc))


@_MANY
@given(st.lists(st.tuples(st.integers(0, 10_000), st.sampled_from(["delete", "replace", "insert"]),
                          st.sampled_from(_TOKENS)), min_size=1, max_size=5))
def test_mutated_netlists_load_or_fail_in_one_line(edits) -> None:
    lines = [line.split(" ") for line in RC.splitlines()]
    for index, op, token in edits:
        row = lines[index % len(lines)]
        i = (index // len(lines)) % (len(row) + 1)
        if op == "delete" and i < len(row):
            del row[i]
        elif op == "replace" and i < len(row):
            row[i] = token
        else:
            row.insert(i, token)
    load_or_user_error("\n".join(" ".join(r) for r in lines))


@_MANY
@given(st.lists(st.text(alphabet="RCVDL.0123456789 abcinout{}()=pnkmx+-*/\t", max_size=40), max_size=8))
def test_random_lines_load_or_fail_in_one_line(lines) -> None:
    load_or_user_error("title\n" + "\n".join(lines) + "\n.tran 1p 1n\n.end\n")


_VALUES = st.one_of(st.text(max_size=12), st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True),
                    st.booleans(), st.none())
_RULES = [(name, rule) for name, rules in (("simulate", SIMULATE), ("optimize", OPTIMIZE), ("train", TRAIN))
          for rule in rules if not rule.key.endswith("*")]


@settings(max_examples=1000, deadline=None)
@given(st.sampled_from(_RULES), _VALUES)
def test_any_value_of_any_key_passes_or_names_the_key(named_rule, value) -> None:
    from omegaconf import OmegaConf

    _, rule = named_rule
    cfg = OmegaConf.create({})
    OmegaConf.update(cfg, rule.key, value, force_add=True)
    try:
        check_config(cfg, [rule])
    except ConfigError as exc:
        text = str(exc)
        assert text.startswith(f"{rule.key}=") and "\n" not in text and ": must be" in text or "cannot write" in text \
            or "is a" in text or "no such" in text or "sqlite" in text or "journal" in text, text


_TOKEN = st.text(alphabet="abc019.-+e=[]{},'\" :$", max_size=10)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["solver.rtol", "params.r", "ngspice", "circuit", "seed", "solver.max_steps"]), _TOKEN)
def test_fuzzed_overrides_compose_into_a_checked_config_or_one_line(key, token) -> None:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        try:
            cfg = compose(config_name="simulate", overrides=[f"++{key}={token}" if key.startswith("params.")
                                                             else f"{key}={token}"])
        except Exception as exc:  # noqa: BLE001 - Hydra's message must be one a user can read
            message = user_error_message(exc)
            assert message and "\n" not in message, (type(exc), str(exc))
            return
        try:
            check_config(cfg, SIMULATE)
        except ConfigError as exc:
            assert "\n" not in str(exc)
