"""`/metrics` (accounts/ops/metrics.py): who may read it, and what a burst at expiry shows."""

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from accounts.reasons import Reason
from authapi.demo import DEMO_USERS
from tests import fakes
from tests.flows import burst, post_login, sign_in_as, wait_until_access_expired
from tests.servers import running_app, running_authapi

ADMIN = DEMO_USERS[0]
BURST = 50


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """Every sample of a scrape: (name, sorted labels) -> value."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def total(found: dict, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in found.items() if n == name and wanted <= set(ls))


# --- who may read it -----------------------------------------------------------------


def test_off_unless_auth_metrics_is_set(client, db, settings):
    settings.AUTH_METRICS = False
    assert client.get("/metrics").status_code == 404


def test_only_the_allowed_addresses_or_the_token_may_read(client, db, settings):
    settings.AUTH_METRICS = True
    settings.AUTH_METRICS_TOKEN = "a-scraper-token-of-some-length"

    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="203.0.113.9").status_code == 403
    wrong = client.get("/metrics", REMOTE_ADDR="203.0.113.9", HTTP_AUTHORIZATION="Bearer nope")
    assert wrong.status_code == 403
    right = client.get(
        "/metrics",
        REMOTE_ADDR="203.0.113.9",
        HTTP_AUTHORIZATION="Bearer a-scraper-token-of-some-length",
    )
    assert right.status_code == 200
    assert right["Content-Type"].startswith("text/plain")
    assert "auth_sessions" in right.content.decode()


def test_sign_ins_and_outs_are_counted_by_outcome(client, db, locmem_cache, backend, settings):
    settings.AUTH_METRICS = True
    before = samples(client.get("/metrics").content.decode())
    backend.post(f"{fakes.BASE}/auth/login", status=401, json={"message": "no"})
    client.post("/accounts/login/", {"email": "admin@example.com", "password": "wrong"})
    fakes.sign_in_client(client, access=fakes.access_jwt())
    fakes.stub_logout(backend)
    client.post("/accounts/logout/")

    after = samples(client.get("/metrics").content.decode())

    def grew(name, **labels):
        return total(after, name, **labels) - total(before, name, **labels)

    assert grew("auth_sign_ins_total", outcome="wrong_password") == 1
    assert grew("auth_sign_in_throttle_total", decision="allowed") == 1
    assert grew("auth_sign_outs_total", reason="user") == 1
    assert grew("auth_backend_requests_total", endpoint="login", status="401") == 1
    assert grew("auth_backend_requests_total", endpoint="logout", status="200") == 1


# --- a burst at expiry, over real HTTP -----------------------------------------------


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("metrics")
    with (
        running_authapi(workdir, AUTHAPI_ACCESS_TTL="3", AUTHAPI_REFRESH_DELAY="0.5") as api,
        running_app(
            workdir,
            api_url=api.url,
            workers=2,
            gunicorn_args=("--threads", "32"),
            AUTH_METRICS="1",
        ) as app,
    ):
        yield app, api


def scrape(app) -> dict:
    response = requests.get(f"{app.url}/metrics", timeout=10)
    assert response.status_code == 200, response.text[:300]
    return samples(response.text)


def test_a_burst_sharing_an_expired_token_is_one_refresh_call_and_49_served(servers):
    app, api = servers
    browser = sign_in_as(app.url, ADMIN)
    wait_until_access_expired(browser)
    before, api_before = scrape(app), api.stats()

    # Calls that need the token: each waits for the one refresh (a page that needs
    # none would be served from the session without waiting).
    answers = burst([f"{app.url}/api/users/me"] * BURST, browser)

    assert [getattr(a, "status_code", repr(a)) for a in answers] == [200] * BURST
    after = scrape(app)
    assert api.stats()["refresh"] - api_before["refresh"] == 1

    def grew(name, **labels):
        return total(after, name, **labels) - total(before, name, **labels)

    assert grew("auth_refresh_calls_total") == 1
    assert grew("auth_refresh_calls_total", outcome="ok") == 1
    assert grew("auth_refresh_served_total") == BURST - 1
    # Each request that waited for the refresh is timed. One that reaches the app after
    # the session has moved on to the new pair is caught up at once instead
    # (accounts/checking.py, `_catch_up_late_tab`): served, no wait. On a slow machine
    # a few of the burst do; most still wait.
    waits = grew("auth_refresh_wait_seconds_count")
    assert BURST // 2 <= waits <= BURST, waits
    assert total(after, "auth_refresh_reuse_suspect_total") == 0
    assert grew("auth_backend_requests_total", endpoint="refresh", status="200") == 1
    assert total(after, "auth_sessions", storage="cookies") >= 1


def test_every_worker_counts_into_one_scrape(servers):
    app, _ = servers
    before = scrape(app)
    for _ in range(4):  # spread over both workers; fewer than the throttle allows
        post_login(app.url, ADMIN.email, "not-the-password")
    after = scrape(app)

    wrong = total(after, "auth_sign_ins_total", outcome="wrong_password") - total(
        before, "auth_sign_ins_total", outcome="wrong_password"
    )
    assert wrong == 4


def test_a_late_tab_moved_on_by_a_kept_refresh_counts_as_served(
    client, db, settle, backend, settings
):
    from accounts.ops import metrics

    settings.AUTH_METRICS = True
    old_access = fakes.access_jwt(ttl=-5)
    fakes.sign_in_client(client, access=old_access)
    fakes.stub_refresh(backend)
    fakes.stub_me(backend)
    assert client.get("/api/users/me").status_code == 200  # the refresh, waited for
    before = metrics.REFRESH_SERVED.labels("shared")._value.get()
    client.cookies["access_token"] = old_access  # a tab that sent the old pair
    client.cookies["refresh_token"] = "refresh-1"

    late = client.get("/dashboard/")

    assert late.status_code == 200
    assert late.cookies["refresh_token"].value == "refresh-2"
    assert metrics.REFRESH_SERVED.labels("shared")._value.get() == before + 1
    assert len(fakes.calls_to(backend, "/auth/refresh")) == 1


# --- one source: every event on both sides, in the same buckets -----------------------


@pytest.fixture
def both_sides(client, db, locmem_cache, settings, monkeypatch):
    """Metrics on, an empty timeline; returns a reader of what each side holds now."""
    from accounts.ops import timeline
    from accounts.ops.timeline import TimelineBuffer
    from accounts.pacing import AtMostEvery

    settings.AUTH_METRICS = True
    monkeypatch.setattr(timeline, "_buffer", TimelineBuffer(interval=3600))
    monkeypatch.setattr(timeline, "_warn", AtMostEvery(60))
    return lambda: (samples(client.get("/metrics").content.decode()), timeline.read())


def bucket_grown(before: dict, after: dict, name: str, **labels: str) -> str:
    """Return the `le` of the one bucket a single observation went to (its own, not cumulative)."""
    grew = sorted(
        (float(ls["le"]), ls["le"])
        for (n, key), v in after.items()
        if n == name and set(labels.items()) <= set(key)
        for ls in [dict(key)]
        if v - before.get((n, key), 0) == 1
    )
    return grew[0][1]  # cumulative buckets: the smallest that grew holds it


@pytest.mark.parametrize("seconds", [0.004, 0.005, 0.3, 4.0, 45.0, 150.0])
def test_a_latency_is_in_the_same_bucket_on_metrics_and_on_the_health_page(both_sides, seconds):
    from accounts.ops import events, metrics

    prometheus_before, _ = both_sides()

    metrics.backend_call("refresh", 200, seconds)

    prometheus, found = both_sides()
    le = bucket_grown(
        prometheus_before, prometheus, "auth_backend_request_seconds_bucket", endpoint="refresh"
    )
    row = found.buckets("refresh")[-1]
    assert sum(row) == 1
    assert events.bucket_name(row.index(1)) == le
    # The health page's quantile of that one call is histogram_quantile's of the same bucket.
    index = events.bucket_of(seconds)
    upper = events.LATENCY_BUCKETS[min(index, len(events.LATENCY_BUCKETS) - 1)]
    assert found.window_percentile("refresh", 1.0) == pytest.approx(upper)


def test_a_wait_for_a_refresh_is_in_the_same_bucket_on_both_sides(both_sides):
    from accounts.ops import events, metrics

    prometheus_before, _ = both_sides()

    metrics.refresh_served("waited", 0.3)

    prometheus, found = both_sides()
    le = bucket_grown(prometheus_before, prometheus, "auth_refresh_wait_seconds_bucket")
    row = found.buckets("all", "refresh_wait")[-1]
    assert (le, sum(row)) == ("0.5", 1)
    assert events.bucket_name(row.index(1)) == le


def test_the_histograms_and_the_timeline_have_one_set_of_buckets(both_sides):
    from accounts.ops import events, metrics, timeline

    metrics.backend_call("me", 200, 0.01)
    prometheus, _ = both_sides()

    les = [
        dict(key)["le"]
        for (n, key) in prometheus
        if n == "auth_backend_request_seconds_bucket" and ("endpoint", "me") in key
    ]
    assert les == list(timeline.BUCKETS)
    assert les[-2:] == ["120.0", "+Inf"]  # reaches AUTH_REFRESH_TIMEOUT
    waits = [dict(key)["le"] for (n, key) in prometheus if n == "auth_refresh_wait_seconds_bucket"]
    assert waits == les
    assert [float(le) for le in les[:-1]] == list(events.LATENCY_BUCKETS)


@pytest.mark.parametrize(
    ("record", "metric", "labels", "series", "label"),
    [
        (
            lambda m: m.refresh_call("ok"),
            "auth_refresh_calls_total",
            {"outcome": "ok"},
            "refresh",
            "ok",
        ),
        (
            lambda m: m.refresh_served("shared", 0.0),
            "auth_refresh_served_total",
            {"how": "shared"},
            "refresh_served",
            "shared",
        ),
        (
            lambda m: m.reuse_suspect(),
            "auth_refresh_reuse_suspect_total",
            {},
            "reuse_suspect",
            "suspect",
        ),
        (
            lambda m: m.sign_in("backend_down"),
            "auth_sign_ins_total",
            {"outcome": "backend_down"},
            "sign_in",
            "backend_down",
        ),
        (
            lambda m: m.sign_out(Reason.NO_TOKENS),
            "auth_sign_outs_total",
            {"reason": "no_tokens"},
            "sign_out",
            "no_tokens",
        ),
        (
            lambda m: m.throttle("refused"),
            "auth_sign_in_throttle_total",
            {"decision": "refused"},
            "throttle",
            "refused",
        ),
        (lambda m: m.proxy(502), "auth_proxy_requests_total", {"status": "502"}, "proxy", "502"),
    ],
    ids=["refresh", "served", "reuse", "sign_in", "sign_out", "throttle", "proxy"],
)
def test_every_event_is_counted_on_metrics_and_on_the_health_page_alike(
    both_sides, record, metric, labels, series, label
):
    from accounts.ops import metrics

    prometheus_before, _ = both_sides()

    record(metrics)

    prometheus, found = both_sides()
    assert total(prometheus, metric, **labels) - total(prometheus_before, metric, **labels) == 1
    assert found.total(series, label) == 1
    assert found.total(series) == 1  # under that label, not "other"
