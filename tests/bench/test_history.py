"""The bench history: every run appends its rows, and `python -m bench --report` prints the
README's table as medians over the full runs (quick runs and skipped rows left out)."""

import json

from bench.__main__ import main
from bench.harness import Context, Row, append_history, skipped


def test_report_is_the_median_of_full_runs(tmp_path, capsys):
    history = tmp_path / "history.jsonl"
    full = Context(quick=False, repeats=5, device="cpu")
    for orchard in (10.0, 30.0, 12.0):  # one slow run among three: the median is 12, not 10
        append_history(
            [Row("rest.list_10", "page", orchard, 10.0, "ms", goal="<= 1.5")], history, full
        )
    quick = Context(quick=True, repeats=1, device="cpu")
    append_history([Row("rest.list_10", "page", 1.0, 10.0, "ms", goal="<= 1.5")], history, quick)
    append_history([skipped("queue.latency_redis", "p50", "no Redis")], history, full, note="x")

    lines = [json.loads(line) for line in history.read_text().splitlines()]
    assert len(lines) == 5
    assert {"date", "machine", "quick", "device", "note"} <= set(lines[0])
    assert [line["quick"] for line in lines] == [False, False, False, True, False]

    assert main(["--report", "--history", str(history)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[2] == "| `rest.list_10` | page | 12 ms | 10 ms | 1.2 | <= 1.5 | 3 (1-3) |"
    assert len(table) == 3  # the skipped row has no figures to report
