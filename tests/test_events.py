"""accounts/ops/events.py: one vocabulary and one set of buckets for /metrics and health."""

import ast
from pathlib import Path

import pytest

from accounts.ops import events, timeline
from accounts.reasons import Reason

ROOT = Path(__file__).resolve().parent.parent
# accounts/signals.py's event functions that take a label, and the series it goes to.
LABELLED = {
    "refresh_call": "refresh",
    "refresh_served": "refresh_served",
    "sign_in": "sign_in",
    "throttle": "throttle",
}


def literals(node: ast.expr) -> list[str]:
    """Return the strings an argument can be: a literal, or either side of `a if c else b`."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.IfExp):
        return literals(node.body) + literals(node.orelse)
    return []


def event_calls() -> list[tuple[str, str, str]]:
    """Return (where, function, label) for each `signals.<function>("label", …)` in the app
    (the core reports events through accounts/signals.py; metrics.py records them)."""
    found = []
    for path in sorted([*ROOT.glob("accounts/**/*.py"), *ROOT.glob("dashboard/**/*.py")]):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "signals"
                and node.func.attr in LABELLED
                and node.args
            ):
                where = f"{path.relative_to(ROOT)}:{node.lineno}"
                found += [(where, node.func.attr, label) for label in literals(node.args[0])]
    return found


def test_every_label_the_app_records_is_in_the_one_vocabulary():
    calls = event_calls()

    outside = [
        (where, label)
        for where, function, label in calls
        if label not in events.COUNTERS[LABELLED[function]]
    ]
    assert outside == []
    recorded = {(LABELLED[function], label) for _, function, label in calls}
    assert ("sign_in", "wrong_password") in recorded and ("refresh", "unknown") in recorded


def test_every_endpoint_the_client_names_is_in_the_one_vocabulary():
    source = ast.parse((ROOT / "accounts" / "client.py").read_text())
    named = {
        keyword.value.value
        for node in ast.walk(source)
        if isinstance(node, ast.Call)
        for keyword in node.keywords
        if keyword.arg == "endpoint" and isinstance(keyword.value, ast.Constant)
    }
    assert "health" in named
    assert named <= set(events.ENDPOINTS)


def test_the_timeline_knows_exactly_the_series_the_metrics_record():
    assert timeline.KNOWN == {**events.COUNTERS, **events.HISTOGRAMS}
    assert events.COUNTERS["sign_out"] == tuple(Reason)
    assert events.HISTOGRAMS[events.LATENCY] == events.ENDPOINTS


def test_the_buckets_reach_the_refresh_timeout_and_keep_the_low_end():
    assert list(events.LATENCY_BUCKETS) == sorted(set(events.LATENCY_BUCKETS))
    assert events.LATENCY_BUCKETS[0] == 0.005 and events.LATENCY_BUCKETS[-1] == 120.0
    assert [events.bucket_name(i) for i in (0, 7, 12, 13)] == ["0.005", "1.0", "120.0", "+Inf"]


@pytest.mark.parametrize(
    ("counts", "q", "expected"),
    [
        # histogram_quantile: linear inside the bucket, from 0 in the first.
        ({0: 4}, 0.5, 0.0025),
        ({5: 10}, 0.25, 0.1 + 0.15 * 0.25),
        ({1: 5, 12: 5}, 0.9, 30.0 + 90.0 * 0.8),
        ({13: 3}, 0.5, 120.0),  # past the last bound: that bound
    ],
)
def test_quantile_is_histogram_quantile(counts, q, expected):
    row = [counts.get(i, 0) for i in range(len(events.LATENCY_BUCKETS) + 1)]
    assert events.quantile(row, q) == pytest.approx(expected)
