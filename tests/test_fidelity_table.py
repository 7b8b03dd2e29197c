"""bench/FIDELITY.md is data the app reads: it parses, names only registered methods and known
verdicts, covers every seed method, and the method's description in the app shows its rows."""

import pytest

from pruning.errors import BadInputError
from pruning.fidelity import FIDELITY_FILE, HEADER, VERDICTS, all_claims, claims_for, parse_claims

SEED_METHODS = ("dns", "lomp", "undecayed", "snip", "grasp", "grad-norm", "seqattn", "grda", "sdprun")
TABLE_HEAD = "| " + " | ".join(HEADER) + " |\n|" + "---|" * len(HEADER) + "\n"


def test_the_shipped_table_covers_every_seed_method_with_known_verdicts():
    claims = all_claims()
    assert FIDELITY_FILE.exists() and claims
    assert {claim.verdict for claim in claims} <= set(VERDICTS)
    for name in SEED_METHODS:
        assert claims_for(name), f"no row for {name} in {FIDELITY_FILE.name}"
    assert all(claim.command.startswith("`") for claim in claims), "each row gives its command"


def test_a_row_is_read_cell_by_cell():
    text = ("intro\n\n" + TABLE_HEAD
            + "| P | dns, grda | it works | 56x | 85.3x | **reproduced** | `python x.py` (3 s) |\n"
            + "| Q | `snip` | early | good | bad | not reproduced | `y` |\n\nafter the table | not a row |\n")
    first, second = parse_claims(text)
    assert first.methods == ("dns", "grda") and first.verdict == "reproduced" and first.ours == "85.3x"
    assert second.methods == ("snip",) and second.verdict == "not reproduced" and second.command == "`y`"


@pytest.mark.parametrize("row, message", [
    ("| P | nonesuch | c | f | o | partly | `x` |", "unknown method nonesuch"),
    ("| P | dns | c | f | o | maybe | `x` |", "verdict 'maybe'"),
    ("| P | dns | c | f | partly | `x` |", "6 cells"),
])
def test_a_broken_row_is_refused_with_its_line(row, message):
    with pytest.raises(BadInputError, match=message) as error:
        parse_claims(TABLE_HEAD + row + "\n")
    assert "line 3" in str(error.value)


def test_a_file_without_the_table_is_refused():
    with pytest.raises(BadInputError, match="exactly one header row"):
        parse_claims("| paper | claim |\n|---|---|\n")


def test_the_methods_description_in_the_app_shows_its_verdicts():
    from tests.app_driver import start

    at = start(dataset="digits", model="mlp", epochs=1)
    at.selectbox(key="method").set_value("dns").run()
    assert not at.exception
    shown = [table.value for table in at.table]
    rows = claims_for("dns")
    assert any(list(frame["verdict"]) == [claim.verdict for claim in rows]
               and list(frame["claim"]) == [claim.claim for claim in rows] for frame in shown)
    at.selectbox(key="method").set_value("random").run()
    assert not any("verdict" in frame.columns for frame in (table.value for table in at.table)), \
        "random has no row: no table"
