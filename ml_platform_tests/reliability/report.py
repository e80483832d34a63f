"""The fault-injection suite's record as Markdown: the faults tried, their outcome and the totals.

    python -m ml_platform_tests.reliability.report [--input test-output/reliability.json]
                                                   [--output test-output/reliability.md]

Prints the Markdown and writes it to ``--output``. Totals count passed cases; a figure seen in a
known gap (an ``xfail`` case: a fault the platform does not handle yet) is shown beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections import defaultdict
from datetime import datetime
from pathlib import Path

TEST_OUTPUT = Path(
    os.environ.get("ML_PLATFORM_TEST_OUTPUT", Path(__file__).resolve().parents[2] / "test-output")
)
DEFAULT_INPUT = TEST_OUTPUT / "reliability.json"
OUTCOME = {"passed": "pass", "failed": "**FAIL**", "known gap (xfail)": "known gap", "xpassed": "**XPASS**"}


TEMP_ROOT = re.compile(r"/tmp/pytest-of-[^/]+/pytest-\d+/(?:popen-gw\d+/)?[^/\s]+/")
NOISE = re.compile(r"\b(?:dagster\._core\.definitions\.events\.|ml_platform\.resources\.mlflow\.|_duckdb\.)")


def _cell(text: object, limit: int = 240) -> str:
    """One table cell: temp directories and module prefixes dropped, whitespace folded."""
    text = NOISE.sub("", TEMP_ROOT.sub("", " ".join(str(text).split())))
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text.replace("|", "\\|")


def load(path: Path) -> list[dict]:
    cases = json.loads(path.read_text())["cases"]
    entries = [entry for test in sorted(cases) for entry in cases[test]]
    return sorted(entries, key=lambda e: (e["area"], e["test"]))


def totals(entries: list[dict]) -> dict[str, dict[str, int]]:
    """Figures summed over passed cases ("ok"), known gaps ("gap") and failing cases ("failed")."""
    out: dict[str, dict[str, int]] = defaultdict(lambda: {"ok": 0, "gap": 0, "failed": 0})
    for entry in entries:
        bucket = "ok" if entry["passed"] else "gap" if entry["outcome"] == "known gap (xfail)" else "failed"
        figures = entry.get("figures", {})
        for name in ("lock_failures", "rows_lost", "rows_duplicated"):
            out[name][bucket] += int(figures.get(name, 0) or 0)
        if figures.get("bad_input"):
            out["bad_inputs"][bucket] += 1
            out["clear_errors"][bucket] += int(bool(figures.get("clear_error")) and entry["passed"])
        out["cases"][bucket] += 1
    return out


def _figure(values: dict[str, int]) -> str:
    notes = [
        f"+{values[k]} in {name}"
        for k, name in (("gap", "known gaps"), ("failed", "failing cases"))
        if values[k]
    ]
    return str(values["ok"]) + (f" ({', '.join(notes)})" if notes else "")


def render(entries: list[dict]) -> str:
    sums = totals(entries)
    outcomes = defaultdict(int)
    for entry in entries:
        outcomes[entry["outcome"]] += 1
    lines = [
        "| Area | Fault injected | Expected | Observed | Outcome |",
        "| --- | --- | --- | --- | --- |",
    ]
    for entry in entries:
        area = entry["area"].split(". ", 1)[-1]
        lines.append(
            f"| {_cell(area, 40)} | {_cell(entry['fault'], 140)} | {_cell(entry['expected'], 140)} "
            f"| {_cell(entry['observed'])} | {OUTCOME.get(entry['outcome'], entry['outcome'])} |"
        )
    bad = sums["bad_inputs"]
    summary = [
        f"- runs failed on locks: **{_figure(sums['lock_failures'])}**",
        f"- rows lost: **{_figure(sums['rows_lost'])}**",
        f"- rows duplicated: **{_figure(sums['rows_duplicated'])}**",
        f"- bad inputs tried: **{bad['ok'] + bad['gap'] + bad['failed']}**, "
        f"with **{sums['clear_errors']['ok']}** clear errors"
        + (f" ({bad['gap'] + bad['failed']} not handled yet)" if bad["gap"] or bad["failed"] else ""),
        "- cases: " + ", ".join(f"{n} {name}" for name, n in sorted(outcomes.items())),
    ]
    gaps = [e for e in entries if e["outcome"] == "known gap (xfail)"]
    text = ["### Faults tried", "", *lines, "", "### Totals", "", *summary]
    if gaps:
        text += ["", "### Known gaps", ""]
        text += [f"- {_cell(e['fault'], 200)}: {_cell(e['observed'], 400)}" for e in gaps]
    newest = max((e["recorded_at"] for e in entries), default="")
    text += [
        "",
        f"_Generated from `test-output/reliability.json` ({len(entries)} cases, last {newest[:10]})._",
    ]
    return "\n".join(text) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, default=DEFAULT_INPUT)
    parser.add_argument("--output", type=Path, default=None, help="default: <input>.md")
    args = parser.parse_args(argv)
    if not args.input.exists():
        print(
            f"{args.input}: no record yet; run the suite (pytest ml_platform_tests/reliability)",
            file=sys.stderr,
        )
        return 2
    markdown = render(load(args.input))
    output = args.output or args.input.with_suffix(".md")
    output.write_text(markdown)
    print(markdown, end="")
    print(f"\n(written to {output} at {datetime.now():%H:%M})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
