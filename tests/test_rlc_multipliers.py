"""m= and scale= on capacitors and inductors as ngspice-39 applies them: C x scale x m (captemp.c,
capload.c), L x scale / m (indtemp.c, indload.c), a coupling's M from L x scale without m
(muttemp.c); checked against ngspice on the deck as written."""

from __future__ import annotations

import pytest

from circuits.ngspice import ngspice_available
from tests.netlist_helpers import assert_rejected, nrmse_vs_ngspice_as_written, parse_body

MULTIPLIER_DECK = """c and l with m and scale
V1 in 0 SIN(0 1 40k)
R1 in a 1k
C1 a 0 1n m=3 scale=2
R2 in b 100
L2 b 0 1m m=4 scale=0.5
R3 in c 50
L3 c d 2m m=2 scale=3
C3 d 0 2n m=0.5
L4 e 0 1m m=2 scale=2
R4 e 0 100
K1 L3 L4 0.3
.tran 0.1u 60u
.end
"""

UIC_DECK = """initial conditions scaled by m
C1 a 0 1n m=3 scale=2 ic=1
R1 a 0 1k
L2 b 0 1m m=4 scale=0.5 ic=2m
R2 b 0 100
.tran 0.05u 10u uic
.end
"""


def test_tc_and_bv_max_are_read_as_no_change_at_27c():
    nl = parse_body("C1 a 0 1n tc1=1e-3 tc2=1e-5 bv_max=50\nR1 a 0 1k\nL2 a b 1u tc1=2e-3\nR2 b 0 1\n")
    assert {"c1 tc1= (no effect at 27 C) (line 2)", "c1 bv_max= (a warning limit only) (line 2)",
            "l2 tc1= (no effect at 27 C) (line 4)"} <= set(nl.ignored)


@pytest.mark.parametrize("card, what", [("C1 a 0 1n temp=50", "unknown parameter 'temp'"),
                                        ("L1 a 0 1n nt=3", "unknown parameter 'nt'"),
                                        ("L1 a 0 1n bv_max=3", "unknown parameter 'bv_max'")])
def test_other_instance_parameters_stay_rejected(card, what):
    assert_rejected(card + "\nR1 a 0 1k\n", 2, what)


@pytest.mark.ngspice
@pytest.mark.skipif(not ngspice_available(), reason="ngspice not installed")
@pytest.mark.parametrize("deck", [MULTIPLIER_DECK, UIC_DECK], ids=["driven", "uic"])
def test_m_and_scale_on_c_and_l_match_ngspice(tmp_path, deck):
    """(Measured: a coupling whose M divided by the inductors' m would be 0.18 from ngspice on v(e).)"""
    path = tmp_path / "multipliers.cir"
    path.write_text(deck)
    errors = nrmse_vs_ngspice_as_written(path)
    assert errors["worst"] <= 1e-3, errors
