"""accounts/signals.py: the core reports its events as signals; metrics.py is one receiver,
and a project may connect its own."""

import logging

import pytest
from django.dispatch import Signal
from django.test import Client

from accounts import signals
from accounts.reasons import Reason
from tests import fakes

LOGIN = "/accounts/login/"
ADMIN_FORM = {"email": "admin@example.com", "password": "admin-demo-pass"}


def test_a_projects_receiver_hears_each_sign_in_and_sign_out(db, backend):
    heard = []

    def sign_in(sender, *, outcome, **kwargs):
        heard.append(("sign_in", outcome))

    def ended(sender, *, reason, count, **kwargs):
        heard.append(("ended", reason, count))

    signals.sign_in_ended.connect(sign_in)
    signals.sessions_ended.connect(ended)
    try:
        backend.post(f"{fakes.BASE}/auth/login", status=401, json={"message": "Unauthorized"})
        Client().post(LOGIN, ADMIN_FORM)
        client = fakes.sign_in_client(Client(), "admin")
        fakes.stub_logout(backend)
        client.post("/accounts/logout/")
    finally:
        signals.sign_in_ended.disconnect(sign_in)
        signals.sessions_ended.disconnect(ended)

    assert heard == [("sign_in", "wrong_password"), ("ended", Reason.USER, 1)]


def test_a_receiver_that_fails_costs_no_one_a_page_nor_the_metrics(
    db, backend, monkeypatch, caplog
):
    from accounts.ops import metrics

    counted = []
    monkeypatch.setattr(metrics, "sign_in", counted.append)

    def broken(sender, **kwargs):
        raise RuntimeError("an audit log that is down")

    signals.sign_in_ended.connect(broken)
    try:
        backend.post(f"{fakes.BASE}/auth/login", status=401, json={"message": "Unauthorized"})
        with caplog.at_level(logging.ERROR, logger="django.dispatch"):
            response = Client().post(LOGIN, ADMIN_FORM)
    finally:
        signals.sign_in_ended.disconnect(broken)

    assert response.status_code == 200  # the form again, with its error
    assert counted == ["wrong_password"]
    (logged,) = [r for r in caplog.records if r.name == "django.dispatch"]
    assert "an audit log that is down" in logged.getMessage()


@pytest.mark.parametrize("storage", ["cookies", "session"])
def test_a_warm_signed_in_page_sends_no_signal_so_metrics_cost_it_nothing(
    db, backend, settings, storage
):
    """Metrics count only what the core announces: a page whose access token is
    still valid announces nothing, so AUTH_METRICS on adds no work to it
    (make bench (f) measures the same from outside)."""
    settings.AUTH_TOKEN_STORAGE = storage
    settings.AUTH_METRICS = True
    fakes.stub_login(backend)
    fakes.stub_me(backend)
    client = Client()
    assert client.post(LOGIN, ADMIN_FORM).status_code == 302
    every = [value for value in vars(signals).values() if isinstance(value, Signal)]
    assert len(every) == 9
    sent = []

    def receiver(signal, sender, **kwargs):
        sent.append(signal)

    for signal in every:
        signal.connect(receiver)
    try:
        pages = [client.get("/dashboard/") for _ in range(3)]
    finally:
        for signal in every:
            signal.disconnect(receiver)

    assert [page.status_code for page in pages] == [200, 200, 200]
    assert sent == []
    assert len(backend.calls) == 2  # the sign-in and its /users/me, nothing since
