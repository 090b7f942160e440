"""The demo's last word: accuracy table, feed and latency summaries, and where the files are.

``python -m rtvol.loadtest.summary REPORTS`` reads what `make demo` wrote under REPORTS
(report.json from `rtvol evaluate`, feed.json from `rtvol feed --report`, loadtest/ from
`rtvol loadtest`); a missing part is named, not fatal.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rtvol.loadtest import feed, report
from rtvol.training import evaluate


def _read(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def summary(reports: Path) -> str:
    accuracy, fed = _read(reports / "report.json"), _read(reports / "feed.json")
    latency = _read(reports / "loadtest" / "report.json")  # as `rtvol loadtest --out REPORTS/loadtest`
    missing = "(missing: the step that writes it did not run)"
    load = reports / "loadtest"
    return "\n".join([
        "== accuracy on held-out time_ids (RMSPE, lower is better) ==",
        evaluate.table(accuracy) if accuracy else missing,
        "== feed ==",
        feed.from_dict(fed).line() if fed else missing,
        "== gateway latency (open loop) ==",
        report.line(latency) if latency else missing,
        "== files ==",
        f"accuracy: {reports / 'report.json'}, {reports / 'report.png'}, "
        f"{reports / 'report_intervals.png'}",
        f"feed:     {reports / 'feed.json'}",
        f"latency:  {load / 'report.json'}, {load / 'latency_over_time.png'}, "
        f"{load / 'percentile_spectrum.png'}",
    ])


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    print(summary(Path(args[0] if args else "reports")))


if __name__ == "__main__":
    main()
