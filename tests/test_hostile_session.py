"""Hostile token cookies inside a signed-in session (property-based).

The anonymous fuzzing in tests/test_security.py cannot reach the token core:
an anonymous request never refreshes. Here every example is a real signed-in
session (a TokenRecord in the database session) whose request carries
arbitrary token cookies beside its genuine session cookie: forged and
unsigned JWTs, garbage, non-Latin-1 text, someone else's tokens, the real
ones. Whatever arrives: never a 5xx, no gated page unless the cookies are the
session's own, and no refresh token but the session's own ever reaches the
backend.
"""

import jwt
import responses
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accounts.client import usable_token
from tests import fakes

OWN_ACCESS = fakes.access_jwt(ttl=1800)
OWN_REFRESH = "refresh-own-1"
GATED = ["/dashboard/", "/dashboard/admin/", "/dashboard/profile/", "/api/users/me"]
PATHS = [*GATED, "/", "/accounts/refresh/"]

TOKEN = st.one_of(
    st.none(),
    st.just(OWN_ACCESS),
    st.just(OWN_REFRESH),
    st.text(
        alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x2FF, exclude_characters=";"),
        max_size=80,
    ),
    st.just(jwt.encode({"sub": "1", "exp": 4102444800}, None, algorithm="none")),
    st.just(fakes.access_jwt(ttl=1800, sub="2")),
    st.just(fakes.access_jwt(ttl=-60)),
    st.just("é€"),
    st.just("x" * 9000),
    st.just("refresh-of-someone-else"),
)


def cookie_header(session_key: str, access: str | None, refresh: str | None) -> str:
    parts = [f"sessionid={session_key}"]
    if access is not None:
        parts.append(f"access_token={access}")
    if refresh is not None:
        parts.append(f"refresh_token={refresh}")
    return "; ".join(parts)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(access=TOKEN, refresh=TOKEN, path=st.sampled_from(PATHS))
def test_hostile_token_cookies_in_a_signed_in_session(
    db, settings, locmem_cache, access, refresh, path
):
    settings.API_BASEURL = fakes.BASE
    signed_in = fakes.sign_in_client(Client(), "admin", access=OWN_ACCESS, refresh=OWN_REFRESH)
    session_key = signed_in.cookies["sessionid"].value
    # A WSGI server hands headers over as latin-1 text: UTF-8 bytes arrive mangled.
    raw = cookie_header(session_key, access, refresh).encode("utf-8").decode("latin-1")
    client = Client(HTTP_COOKIE=raw)

    with responses.RequestsMock(assert_all_requests_are_fired=False) as backend:
        fakes.stub_refresh(backend, refresh="refresh-own-2")
        fakes.stub_me(backend, "admin")
        fakes.stub_logout(backend)
        if path.startswith("/accounts/"):
            response = client.post(path, HTTP_ACCEPT="application/json")
        else:
            response = client.get(path)
        presented = [
            fakes.sent_cookie(c, "refresh_token") for c in fakes.calls_to(backend, "/auth/refresh")
        ]

    assert response.status_code < 500
    assert set(presented) <= {OWN_REFRESH}, "only the session's own refresh token is ever sent"
    assert len(presented) <= 1
    # What the app saw after parsing: a value outside cookie-octets counts as no cookie.
    seen = response.wsgi_request.COOKIES
    seen_access = usable_token(seen.get("access_token"))
    own_pair = usable_token(seen.get("refresh_token")) == OWN_REFRESH and seen_access in (
        None,
        OWN_ACCESS,
    )
    if path in GATED and response.status_code == 200:
        assert own_pair, "a gated page opened for cookies that are not the session's"
    if not own_pair:
        assert response.wsgi_request.user.is_authenticated is False
        if path in GATED:
            assert response.status_code in (302, 401, 403)
