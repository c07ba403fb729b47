"""Sign-ins take at most AUTH_LOGIN_CONCURRENCY threads of a process (accounts/backends.py).

A backend slow for every sign-in used to hold every gunicorn thread: sixteen
slow sign-ins and a signed-in page that needs no backend waited seconds.
"""

import re
import threading
import uuid

import pytest
import requests

from accounts.exceptions import BackendUnavailable
from accounts.slots import Slots
from authapi.demo import DEMO_USERS
from tests.flows import sign_in_as, wait_for
from tests.servers import running_app, running_authapi

LOGIN = "/accounts/login/"


def SIGN_INS(wait: float) -> Slots:  # noqa: N802 - reads as the class it makes
    return Slots("sign-ins", "AUTH_LOGIN_CONCURRENCY", wait=wait)

THREADS = 6  # gunicorn --threads; the default bound is half: 3
LOGIN_DELAY = 6.0  # seconds the API stalls each sign-in: longer than anything below takes


class TestSignInSlots:
    def test_within_the_limit_nobody_waits(self):
        slots = SIGN_INS(wait=10)
        with slots.hold(limit=2), slots.hold(limit=2):
            pass

    def test_over_the_limit_a_sign_in_waits_for_a_young_holder(self):
        slots = SIGN_INS(wait=30)
        taken, release = threading.Event(), threading.Event()

        def holder():
            with slots.hold(limit=1):
                taken.set()
                release.wait(30)

        thread = threading.Thread(target=holder)
        thread.start()
        taken.wait(30)
        threading.Timer(0.05, release.set).start()
        with slots.hold(limit=1):  # waits for the holder, well within 30 s
            pass
        thread.join()

    def test_over_the_limit_with_every_holder_old_it_is_refused_at_once(self):
        slots = SIGN_INS(wait=0)
        refused = pytest.raises(BackendUnavailable, match=r"AUTH_LOGIN_CONCURRENCY=1")
        with slots.hold(limit=1), refused, slots.hold(limit=1):
            pass
        with slots.hold(limit=1):  # given back, whatever happened
            pass

    def test_the_limit_defaults_to_half_the_threads(self, settings):
        from accounts.conf import conf

        settings.SERVER_THREADS = 8
        assert conf.login_concurrency == 4
        settings.SERVER_THREADS = 1
        assert conf.login_concurrency == 1
        settings.AUTH_LOGIN_CONCURRENCY = 6
        assert conf.login_concurrency == 6


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    with running_authapi(tmp_path_factory.mktemp("signin-api")) as server:
        yield server


@pytest.fixture(scope="module")
def app(api, tmp_path_factory):
    with running_app(
        tmp_path_factory.mktemp("signin-app"),
        api_url=api.url,
        workers=1,
        gunicorn_args=("--threads", str(THREADS)),
        AUTH_BACKEND_TIMEOUT="30",  # the API's stall is slow, not down
    ) as server:
        yield server


def wrong_sign_in(app) -> requests.Response:
    """A sign-in with an email of its own (no throttle counter is shared)."""
    browser = requests.Session()
    form = browser.get(f"{app.url}{LOGIN}", timeout=30)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text)[1]
    return browser.post(
        f"{app.url}{LOGIN}",
        data={
            "email": f"{uuid.uuid4().hex[:12]}@example.com",
            "password": "guess",
            "csrfmiddlewaretoken": token,
        },
        headers={"Referer": f"{app.url}{LOGIN}"},
        allow_redirects=False,
        timeout=60,
    )


def test_slow_sign_ins_hold_at_most_half_the_threads(app, api):
    browser = sign_in_as(app.url, DEMO_USERS[1])
    before = api.stats()
    api.set_faults(login_delay=LOGIN_DELAY)
    try:
        answers: list = [None] * (THREADS + 2)
        answered_while_slow: list = [None] * len(answers)

        def one(index: int) -> None:
            answers[index] = wrong_sign_in(app)
            answered_while_slow[index] = api.stats()["login_failed"] == before["login_failed"]

        threads = [threading.Thread(target=one, args=(i,)) for i in range(len(answers))]
        for thread in threads:
            thread.start()
        # Three sign-ins are at the API, stalled; the page needs no backend.
        wait_for(
            lambda: api.stats()["login_calls"] - before["login_calls"] >= THREADS // 2,
            timeout=30,
            what="three sign-ins at the API",
        )
        page = browser.get(f"{app.url}/accounts/sessions/", timeout=30, allow_redirects=False)
        page_while_slow = api.stats()["login_failed"] == before["login_failed"]
        for thread in threads:
            thread.join()
    finally:
        api.set_faults(login_delay=None)

    assert page.status_code == 200
    assert page_while_slow, "the page waited for the slow sign-ins"
    statuses = [answer.status_code for answer in answers]
    assert sorted(statuses) == [200] * (THREADS // 2) + [503] * (len(answers) - THREADS // 2)
    assert api.stats()["login_calls"] - before["login_calls"] == THREADS // 2
    for answer, early in zip(answers, answered_while_slow, strict=True):
        if answer.status_code == 503:
            assert "Sign-in service unavailable" in answer.text
            assert answer.headers["Retry-After"] == "5"
            assert early, "refused only once a slow sign-in came back"
        else:
            assert "Invalid email or password" in answer.text
