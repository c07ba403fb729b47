"""Every page in Chromium on a phone (390×844) and a desktop (1280×800): axe-core finds no
serious or critical violation, nothing is wider than the phone's screen, and a signed-in
person can see "Sign out" without scrolling sideways.

The pages: sign-in (empty, with errors, throttled), the dashboard, the sessions page,
evaluations, the health page, the 403 and 404 pages, and the sign-out confirmation. One
browser and one pair of servers for the module; one signed-in context per person and width.
"""

import re

import pytest
from axe_playwright_python.sync_playwright import Axe

from authapi.demo import DEMO_USERS
from tests.browser import chromium, sign_in
from tests.flows import sign_in_as
from tests.servers import running_app, running_authapi

ADMIN, EVALUATOR, _ = DEMO_USERS
WIDTHS = {
    "phone": {"width": 390, "height": 844},
    "desktop": {"width": 1280, "height": 800},
}
# The app's own throttle, low so that the throttled page is two wrong passwords away.
MAX_FAILURES = 2
BLOCKING = ("serious", "critical")

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("browser-pages")
    with (
        running_authapi(workdir) as api,
        running_app(workdir, api_url=api.url, AUTH_LOGIN_MAX_FAILURES=str(MAX_FAILURES)) as app,
    ):
        # Another browser of the admin's, so the sessions page has a row to sign out.
        sign_in_as(app.url, ADMIN)
        yield app


@pytest.fixture(scope="module")
def browser():
    with chromium() as browser:
        yield browser


@pytest.fixture(scope="module")
def axe():
    return Axe()


@pytest.fixture(scope="module", params=list(WIDTHS))
def width(request) -> str:
    return request.param


def new_page(browser, servers, width: str, **options):
    context = browser.new_context(base_url=servers.url, viewport=WIDTHS[width], **options)
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.missing = []  # what the page asked for and did not get (a favicon, a script)
    page.on(
        "response",
        lambda response: (
            response.status == 404
            and response.request.resource_type != "document"
            and page.missing.append(response.url)
        ),
    )
    return page


@pytest.fixture(scope="module")
def admin(browser, servers, width):
    page = new_page(browser, servers, width)
    sign_in(page, ADMIN)
    page.wait_for_url(re.compile(r"/dashboard/$"))
    yield page
    page.context.close()


@pytest.fixture(scope="module")
def evaluator(browser, servers, width):
    page = new_page(browser, servers, width)
    sign_in(page, EVALUATOR)
    page.wait_for_url(re.compile(r"/dashboard/$"))
    yield page
    page.context.close()


@pytest.fixture
def visitor(browser, servers, width):
    page = new_page(browser, servers, width)
    yield page
    page.context.close()


# --- what every page must satisfy -----------------------------------------------------------


def blocking_violations(axe, page) -> list[str]:
    """Return axe-core's serious and critical violations, one line per rule."""
    results = axe.run(page)
    assert results.response["testEngine"]["name"] == "axe-core"  # it ran, on this page
    print(f"axe {page.viewport_size['width']} {page.url}: {results.generate_snapshot() or 'none'}")
    return [
        f"{v['id']} ({v['impact']}): {', '.join(str(n['target']) for n in v['nodes'])}"
        for v in results.response["violations"]
        if v["impact"] in BLOCKING
    ]


def assert_page_works(axe, page, width: str, *, signed_in: bool) -> None:
    assert blocking_violations(axe, page) == []
    overflow = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert overflow[0] <= overflow[1], f"the page is {overflow[0]} px wide in {overflow[1]} px"
    assert page.missing == [], "asked for and not found"
    if signed_in:
        sign_out = page.locator("header .session").get_by_role("button", name="Sign out")
        box = sign_out.bounding_box()
        assert box is not None, "no Sign out button"
        viewport = page.viewport_size
        assert box["x"] >= 0 and box["x"] + box["width"] <= viewport["width"], box
        assert box["y"] >= 0 and box["y"] + box["height"] <= viewport["height"], box


# --- signed-in pages -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "heading"),
    [
        ("/dashboard/", "Dashboard"),
        ("/accounts/sessions/", "Your sessions"),
        ("/dashboard/evaluations/", "Evaluations"),
        ("/dashboard/admin/", "Sign-in health"),
        ("/no-such-page/", "Page not found"),
        ("/accounts/logout/", "Sign out"),
    ],
)
def test_the_admins_pages(admin, axe, width, path, heading):
    response = admin.goto(path)
    assert response.status == (404 if path == "/no-such-page/" else 200)
    assert admin.get_by_role("heading", level=1).inner_text() == heading
    assert_page_works(axe, admin, width, signed_in=True)


def test_the_403_page(evaluator, axe, width):
    response = evaluator.goto("/dashboard/admin/")
    assert response.status == 403
    assert evaluator.locator("#denied-reason").inner_text() == "This page needs the role “admin”."
    assert_page_works(axe, evaluator, width, signed_in=True)


def test_the_navigation_marks_the_current_page(admin, width):
    admin.goto("/accounts/sessions/")
    current = admin.locator('nav a[aria-current="page"]')
    assert current.count() == 1
    assert current.inner_text() == "Sessions"


def test_each_session_button_names_its_session(admin, width):
    admin.goto("/accounts/sessions/")
    table = admin.locator("table.sessions")
    this_one = table.get_by_role("button", name=re.compile(r"^Sign out this browser \(Chrome"))
    assert this_one.count() == 1
    other = re.compile(r"^Sign out python-requests \d+, last seen \d+ \w+ \d{4}, \d\d:\d\d UTC$")
    others = table.get_by_role("button", name=other)
    assert others.count() >= 1
    assert table.get_by_role("button", name="Sign out", exact=True).count() == 0


# --- the sign-in page ------------------------------------------------------------------------


def test_sign_in_empty(visitor, axe, width):
    visitor.goto("/accounts/login/?next=/dashboard/")
    assert visitor.locator("#sign-in-reason").inner_text() == "Please sign in to see that page."
    assert_page_works(axe, visitor, width, signed_in=False)


def test_sign_in_with_errors(visitor, axe, width):
    visitor.goto("/accounts/login/")
    visitor.get_by_label("Email").fill("not-an-email")
    visitor.get_by_role("button", name="Sign in").click()
    visitor.wait_for_load_state()
    email = visitor.get_by_label("Email")
    assert email.get_attribute("aria-invalid") == "true"
    described_by = email.get_attribute("aria-describedby")
    assert visitor.locator(f"#{described_by}").inner_text() == "Enter a valid email address."
    assert_page_works(axe, visitor, width, signed_in=False)


def test_sign_in_throttled(visitor, axe, width):
    email = f"throttled-{width}@example.com"
    for _ in range(MAX_FAILURES + 1):
        visitor.goto("/accounts/login/")
        visitor.get_by_label("Email").fill(email)
        visitor.get_by_label("Password").fill("not-the-password")
        with visitor.expect_navigation() as answer:
            visitor.get_by_role("button", name="Sign in").click()
    assert answer.value.status == 429
    alert = visitor.get_by_role("alert").inner_text()
    assert re.search(r"Please wait about 5 minutes \(until \d\d:\d\d UTC\)", alert), alert
    assert_page_works(axe, visitor, width, signed_in=False)


def test_signing_in_shows_it_is_under_way(visitor, width):
    visitor.goto("/accounts/login/")
    # Keep the page: the submission is cancelled after the form's own handler ran.
    visitor.evaluate(
        "document.getElementById('sign-in-form')"
        ".addEventListener('submit', (event) => event.preventDefault())"
    )
    visitor.get_by_label("Email").fill(ADMIN.email)
    visitor.get_by_label("Password").fill(ADMIN.password)
    visitor.get_by_role("button", name="Sign in").click()
    button = visitor.locator("#sign-in-form button[type=submit]")
    button.wait_for(state="attached")
    visitor.wait_for_function("document.querySelector('#sign-in-form button').disabled")
    assert button.inner_text() == "Signing in…"


def test_signing_in_works_without_javascript(browser, servers, width):
    page = new_page(browser, servers, width, java_script_enabled=False)
    sign_in(page, EVALUATOR)
    page.wait_for_url(re.compile(r"/dashboard/$"))
    assert page.locator(".message").inner_text() == "Signed in as Eve Evaluator."
    page.context.close()
