"""`toolprm train calibrate`: how far the head's score of ``[]`` must be raised to meet
a first call's on equal terms, fit on live policy walks.

At the first step a beam sets ``[]`` (call nothing) against each tool's name. The
head scores both as P(step right), but it was trained on far more name steps than
``[]`` steps, and its ``[]`` scores run low: on held-out live walks it ranks ``[]``
well across queries (AUC 0.86 for irrelevant against relevant ones) yet puts it
above the best name on only a third of the irrelevant queries. One number fixes the
scale: ``empty_log_odds`` is added to the logit of the head's ``[]`` score wherever
a scorer reads it (``reward.prm``).

It is chosen on the first-step sets of a ``toolprm train siblings`` folder (live
queries only): the value on a grid of odds multipliers (1 to 10 in steps of 0.25)
with the best balanced accuracy of the decision "``[]`` scores above every name"
(right: ``[]`` for an irrelevant query, a name for a relevant one); ties go to the
smallest. It is written to ``calibration.json`` in the checkpoint folder with the
sha256 of the weights it was fit for; ``reward.prm.load`` refuses it for other
weights, and ``train prm`` / ``train all`` remove it when they write new ones.
"""
from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from pathlib import Path

from toolprm.bfcl import IRRELEVANCE_CATEGORIES
from toolprm.errors import ToolprmError
from toolprm.reward.prm import CALIBRATION, SHIPPED, WEIGHTS, shifted, weights_sha256

from .readme import replace_block
from .siblings import SETS

#: Odds multipliers tried for ``[]`` (the log of each is the shift).
GRID = tuple(1 + 0.25 * i for i in range(37))


def first_step_rows(records: list[dict], reader: str = "prm") -> list[tuple[bool, float, float]]:
    """Per query whose first-step set holds ``[]`` and a name: (irrelevant query, the
    reader's score of ``[]``, its best score of a name). A query's walks share their
    first step; it counts once."""
    rows, seen = [], set()
    for r in records:
        if r["parent"] != "" or r["query"] in seen:
            continue
        seen.add(r["query"])
        empty = [c["scores"][reader] for c in r["candidates"] if c["text"] == "[]"]
        names = [c["scores"][reader] for c in r["candidates"] if c["kind"] == "name"]
        if empty and names:
            rows.append((r["category"] in IRRELEVANCE_CATEGORIES, empty[0], max(names)))
    return rows


def decide(rows: list[tuple[bool, float, float]], log_odds: float) -> dict:
    """How the first step decides with ``log_odds`` added to ``[]``'s logit."""
    irrelevant = [r for r in rows if r[0]]
    relevant = [r for r in rows if not r[0]]
    to_empty_irr = sum(shifted(e, log_odds) > n for _, e, n in irrelevant)
    to_empty_rel = sum(shifted(e, log_odds) > n for _, e, n in relevant)
    return {"log_odds": log_odds, "odds": math.exp(log_odds),
            "irrelevant_to_empty": [to_empty_irr, len(irrelevant)],
            "relevant_to_empty": [to_empty_rel, len(relevant)],
            "balanced_accuracy": 0.5 * (to_empty_irr / len(irrelevant) + 1 - to_empty_rel / len(relevant))}


def choose(rows: list[tuple[bool, float, float]]) -> tuple[dict, list[dict]]:
    if not any(r[0] for r in rows) or all(r[0] for r in rows):
        raise ToolprmError("calibrating [] needs first-step sets of both irrelevant and relevant queries")
    table = [decide(rows, math.log(m)) for m in GRID]
    best = max(table, key=lambda t: (round(t["balanced_accuracy"], 9), -t["log_odds"]))
    return best, table


def markdown(best: dict, table: list[dict], command: str) -> str:
    """The grid as a table, one row per distinct outcome (its smallest multiplier)."""
    lines = [f"Written by `{command}`.", "",
             "| odds multiplier of `[]` | irrelevant queries answered `[]` | relevant queries answered `[]` "
             "| balanced accuracy |", "|---:|---:|---:|---:|"]
    last = None
    for t in table:
        key = (tuple(t["irrelevant_to_empty"]), tuple(t["relevant_to_empty"]))
        if key == last and t is not best:
            continue
        last = key
        (a, p), (b, n) = t["irrelevant_to_empty"], t["relevant_to_empty"]
        mark = " (chosen)" if t is best else ""
        lines.append(f"| ×{t['odds']:.2f}{mark} | {a}/{p} | {b}/{n} | {t['balanced_accuracy']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="toolprm train calibrate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--walks", required=True, help="a `toolprm train siblings` folder (live policy walks)")
    p.add_argument("--checkpoint", default=str(SHIPPED), help="the head's folder (default: the shipped one)")
    p.add_argument("--report", default=None, help="also write the grid as a markdown table here")
    p.add_argument("--readme", default=None, help="replace a results block of this README with the table")
    p.add_argument("--tag", default="calibration-results", help="the README block to replace")
    a = p.parse_args(argv)
    path = Path(a.walks, SETS)
    if not path.exists():
        raise ToolprmError(f"no {SETS} in {a.walks}: make one with `toolprm train siblings`")
    records = [json.loads(l) for l in path.read_text().splitlines() if l.strip()]
    bad = sorted({r["category"] for r in records if not r["category"].startswith("live_")})
    if bad:
        raise ToolprmError(f"{a.walks} holds sets of {', '.join(bad)}: calibrate on live queries only")
    folder = Path(a.checkpoint)
    if not (folder / WEIGHTS).exists():
        raise ToolprmError(f"no {WEIGHTS} in {folder}")
    best, table = choose(first_step_rows(records))
    out = {"empty_log_odds": best["log_odds"], "weights_sha256": weights_sha256(folder),
           "walks": str(a.walks), "queries": len({r["query"] for r in records}),
           "chosen": best, "command": "toolprm train calibrate " + shlex.join(argv)}
    (folder / CALIBRATION).write_text(json.dumps(out, indent=2) + "\n")
    text = markdown(best, table, out["command"])
    if a.report:
        Path(a.report).parent.mkdir(parents=True, exist_ok=True)
        Path(a.report).write_text(text + "\n")
    if a.readme:
        replace_block(a.readme, a.tag, text)
    print(text)
    print(f"\nwrote {folder / CALIBRATION}")
    return 0


__all__ = ["first_step_rows", "decide", "choose", "markdown", "main", "GRID"]
