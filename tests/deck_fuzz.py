"""Mutated real decks (corpus, training and circuit-config netlists) and the one rule they must obey:
`load_circuit` then a short `simulate` either succeeds or raises a one-line NeuroSpiceError naming the deck.

Shared by tests/test_deck_fuzz.py (a few hundred quick examples) and scripts/fuzz_netlists.py (the table)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from hypothesis import strategies as st

import circuits
from circuits.errors import ConfigError, ConvergenceError, NetlistError, NeuroSpiceError
from circuits.result import step_budget
from scripts.compat_corpus import DeckTimeout
from scripts.compat_corpus import _time_limit as time_limit

ROOT = Path(__file__).resolve().parent.parent
#: decks whose unmutated load and first 20 steps take well under 0.1 s: the default test's seeds
QUICK = ("rc", "ring5", "amp", "rc_lowpass", "rlc_ringing", "rlc_series", "ng_rc_basic", "sia_pulse_divider",
         "ng_controlled_sources", "ng_switches_hysteresis", "las_rlc_ringing", "ng_func_cap", "sia_rc_measure",
         "ng_meas_two_sines", "ng_cutout_divider", "sia_highpass_gnd", "ng_if_batchmode_rc", "rustsim_rc_lowpass")
#: outcomes that break the rule (anything else is success, a user error or the example's time limit)
FAILURES = ("crash", "bad message")


def seed_decks(quick: bool = False) -> dict[str, str]:
    """Deck name -> text: tests/data/corpus, tests/data/train and every configs/circuit netlist."""
    decks = {p.stem: p.read_text(encoding="utf-8", errors="surrogateescape")
             for folder in ("tests/data/corpus", "tests/data/train") for p in sorted((ROOT / folder).glob("*.cir"))}
    for p in sorted((ROOT / "configs" / "circuit").glob("*.yaml")):
        netlist = yaml.safe_load(p.read_text()).get("netlist")
        if isinstance(netlist, str):
            decks[p.stem] = netlist
    return {k: v for k, v in decks.items() if k in QUICK} if quick else decks


#: replacement numbers: SI suffixes, zero, negative, huge, tiny, not a number
NUMBERS = st.builds(lambda sign, mantissa, suffix: f"{sign}{mantissa}{suffix}",
                    st.sampled_from(["", "-", "+"]),
                    st.sampled_from(["0", "1", "2.5", "1e300", "1e-300", "1e999", ".5", "7e", "inf", "nan", "00"]),
                    st.sampled_from(["", "f", "p", "n", "u", "m", "k", "meg", "g", "t", "mil", "x", "e", "ms", "v"]))
#: odd tokens: unknown cards, bad node names, unbalanced expressions, stray syntax
ODD = st.sampled_from([".foo", ".option", ".param", ".subckt", ".ends", ".model", ".tran", ".ic", ".end", "+",
                       "*", "$", ";", "=", ",", "(", ")", "{", "}", "'", "{1/0}", "{(1+2}", "{1+2)}", "'(", "v(",
                       "pulse(", "sin(0", "pwl(0 0", "pwl", "exp(", "dc", "ac", "uic", "0", "gnd", "-1", "n@#",
                       "x" * 300, "{x}", "params:", "m=0", "ic=", "level=99", "zz1 a b 1", "q1 c b e", "\t"])
#: bytes that are not UTF-8 (and a NUL)
BYTES = st.sampled_from([b"\xff", b"\xfe\xff", b"\x80", b"\xc3", b"\x00", b"\xe9t\xe9", b"\r", b"\xef\xbb\xbf"])

SHUFFLES = ("delete", "duplicate", "swap")
OPS = tuple(f"{verb} {scope}" for verb in SHUFFLES for scope in ("line", "token")) + (
    "truncate line", "insert line", "replace token", "insert token", "bracket line")
EDIT = st.tuples(st.sampled_from(OPS), st.integers(0, 10**6), st.integers(0, 10**6), st.one_of(NUMBERS, ODD))


def _shuffle(items: list, verb: str, i: int, j: int) -> None:
    """Delete or duplicate item ``i % len``, or swap it with item ``j % len``, in place."""
    k, m = i % len(items), j % len(items)
    if verb == "delete":
        del items[k]
    elif verb == "duplicate":
        items.insert(k, items[k])
    else:
        items[k], items[m] = items[m], items[k]


def _edit(lines: list[str], op: str, i: int, j: int, token: str) -> None:
    """Apply one edit in place: line ``i % len``, its token or character ``j``."""
    verb, scope = op.split(" ")
    k = i % len(lines)
    if verb in SHUFFLES and scope == "line":
        _shuffle(lines, verb, k, j)
    elif op == "truncate line":
        lines[k] = lines[k][:j % (len(lines[k]) + 1)]
    elif op == "insert line":
        lines.insert(k, token if j % 2 else f"{token} n{j % 7} 0 {j % 1000}")
    elif op == "bracket line":  # one bracket dropped or added anywhere in the line
        text = lines[k]
        brackets = [n for n, c in enumerate(text) if c in "(){}'"]
        at = brackets[j % len(brackets)] if brackets and j % 2 else j % (len(text) + 1)
        lines[k] = text[:at] + text[at + 1:] if brackets and j % 2 else text[:at] + "({)}"[j % 4] + text[at:]
    else:
        tokens = lines[k].split(" ")
        if verb in SHUFFLES:
            _shuffle(tokens, verb, j, j // 7)
        elif verb == "replace":
            tokens[j % len(tokens)] = token
        else:
            tokens.insert(j % (len(tokens) + 1), token)
        lines[k] = " ".join(tokens)


@dataclass(frozen=True)
class Mutant:
    """One fuzzed deck: which seed, what was done to it, and its bytes."""

    seed: str
    edits: tuple
    data: bytes


def mutants(decks: dict[str, str]) -> st.SearchStrategy[Mutant]:
    """Seed decks with 1-4 line/token edits and optionally 1-2 non-UTF-8 byte insertions."""
    names = sorted(decks)

    def build(name: str, edits: list, raw: list[tuple[int, bytes]]) -> Mutant:
        lines = decks[name].splitlines() or [""]
        for op, i, j, token in edits:
            _edit(lines, op, i, j, token)
            lines = lines or [""]
        data = "\n".join(lines).encode("utf-8", errors="surrogateescape") + b"\n"
        for at, chunk in raw:
            data = data[:at % (len(data) + 1)] + chunk + data[at % (len(data) + 1):]
        return Mutant(name, tuple(edits) + tuple(raw), data)

    return st.builds(build, st.sampled_from(names), st.lists(EDIT, min_size=1, max_size=4),
                     st.lists(st.tuples(st.integers(0, 10**6), BYTES), max_size=2))


@dataclass
class Outcome:
    """What one mutant did: kind (ok, netlist error, ..., crash), the message and the seconds it took."""

    kind: str
    message: str
    seconds: float


def _user_kind(exc: NeuroSpiceError, path: Path) -> str:
    """The error's kind, or 'bad message' when it is not one line naming the deck's file."""
    text = str(exc)
    if not text.strip() or "\n" in text or path.name not in text:
        return "bad message"
    if isinstance(exc, ConvergenceError) and "solver.max_steps" in text:
        return "step budget"
    for kind, cls in (("netlist error", NetlistError), ("config error", ConfigError),
                      ("convergence error", ConvergenceError)):
        if isinstance(exc, cls):
            return kind
    return "other user error"


def run_mutant(mutant: Mutant, folder: Path, max_steps: int = 200, seconds: float = 5.0) -> Outcome:
    """Write the mutant to ``folder``, load it and simulate at most ``max_steps`` steps within ``seconds``."""
    path = folder / f"{mutant.seed}.cir"
    path.write_bytes(mutant.data)
    start = time.perf_counter()
    try:
        with time_limit(seconds), step_budget(max_steps, progress=False):
            circuits.simulate(circuits.load_circuit(path))
        kind, message = "ok", ""
    except NeuroSpiceError as exc:
        kind, message = _user_kind(exc, path), str(exc)
    except DeckTimeout:
        kind, message = "time limit", f"stopped after {seconds:g} s"
    except Exception as exc:  # noqa: BLE001 - any other exception is the bug this looks for
        kind, message = "crash", f"{type(exc).__name__}: {exc}"
    return Outcome(kind, message, time.perf_counter() - start)
