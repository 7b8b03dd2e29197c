"""The verdicts of ``bench/FIDELITY.md``: for each seed paper's claim, what the paper reports, what
the faithful recipe gives here, and whether it reproduces. The app shows a method's rows beside its
description, so the table is the one place a verdict is written (never typed twice)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from pruning.errors import BadInputError
from pruning.registry import METHODS

FIDELITY_FILE = Path(__file__).resolve().parent.parent / "bench" / "FIDELITY.md"
HEADER = ("paper", "methods", "claim", "paper's figure", "ours", "verdict", "command (time)")
VERDICTS = ("reproduced", "partly", "not reproduced", "not run")


@dataclass(frozen=True)
class Claim:
    paper: str
    methods: tuple[str, ...]  # registry names the claim is about
    claim: str
    paper_figure: str
    ours: str
    verdict: str  # one of VERDICTS
    command: str


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def parse_claims(text: str) -> list[Claim]:
    """The rows of the table whose header is ``HEADER``; a row naming an unknown method or verdict,
    or with the wrong number of cells, is an error (the table is data the app relies on)."""
    lines = text.splitlines()
    starts = [index for index, line in enumerate(lines) if line.startswith("|") and tuple(_cells(line)) == HEADER]
    if len(starts) != 1:
        raise BadInputError(f"the fidelity table needs exactly one header row | {' | '.join(HEADER)} |")
    claims = []
    for number, line in enumerate(lines[starts[0] + 2:], start=starts[0] + 3):
        if not line.startswith("|"):
            break
        cells = _cells(line)
        if len(cells) != len(HEADER):
            raise BadInputError(f"line {number}: {len(cells)} cells, the table has {len(HEADER)}")
        paper, methods, claim, figure, ours, verdict, command = cells
        names = tuple(name.strip(" `") for name in methods.split(","))
        unknown = [name for name in names if name not in METHODS]
        if unknown:
            raise BadInputError(f"line {number}: unknown method {', '.join(unknown)}")
        if verdict.strip("*") not in VERDICTS:
            raise BadInputError(f"line {number}: verdict {verdict!r} is not one of {', '.join(VERDICTS)}")
        claims.append(Claim(paper, names, claim, figure, ours, verdict.strip("*"), command))
    return claims


@lru_cache(maxsize=1)
def all_claims() -> tuple[Claim, ...]:
    """The table as shipped; empty where the file is absent (an installed engine without the benches)."""
    if not FIDELITY_FILE.exists():
        return ()
    return tuple(parse_claims(FIDELITY_FILE.read_text(encoding="utf-8")))


def claims_for(method_name: str) -> list[Claim]:
    return [claim for claim in all_claims() if method_name in claim.methods]
