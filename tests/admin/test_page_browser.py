"""The operator page in a real headless Chromium (Debian's `chromium`, driven by Playwright; never
`playwright install`: it cannot download here) against a real `gateway serve` with `[admin]` on.

Each view is saved as a screenshot (1366x768, a laptop screen) under
.pytest_cache/d/admin-screenshots/, the path printed; and the HTML of every view is checked for
the admin token, which must never reach a page (nor a log line, nor the cookie).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgspec
import pytest
from playwright.sync_api import Browser, expect, sync_playwright

from gateway.delivery.dispatcher import POLL_SECONDS
from tests.admin.support import ADMIN_TOKEN, AUTH, post_finchpay, wait_for
from tests.service.harness import BASE_CONFIG, GatewayProcess, free_port
from tests.support import TOKEN

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LAPTOP = {"width": 1366, "height": 768}
# Generous: two shared cores, a browser and a gateway.
WAIT_MS = 20_000
WRONG_TOKEN = "adm-not-the-token-5b0e"

# The file subscriber `audit` takes everything; `ledger`, an HTTP subscriber on a port nobody
# listens on with one quick retry, takes the lifecycle source's events and makes dead letters.
PAGE_CONFIG = (
    BASE_CONFIG
    + f"""
[subscribers.ledger]
kind = "http"
url = "http://127.0.0.1:{{closed_port}}/hooks"
secret = "whsec_dGVzdC1sZWRnZXItc2VjcmV0LWtleQ=="
timeout_seconds = 1
retry_schedule = [0.2]

[[routes]]
sources = ["lifecycle"]
subscribers = ["ledger"]

[admin]
token = "{ADMIN_TOKEN}"
"""
)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    workdir = tmp_path_factory.mktemp("admin-page")
    process = GatewayProcess(workdir, PAGE_CONFIG.replace("{closed_port}", str(free_port())))
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium; one that cannot start is a skip on a developer's machine and a
    failure in CI (CI=true), where .ci/run installs it."""
    in_ci = os.environ.get("CI") == "true"
    playwright = sync_playwright().start()
    try:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    except Exception as error:
        playwright.stop()
        if in_ci:
            pytest.fail(f"Chromium at {CHROMIUM} did not start: {error}")
        pytest.skip(f"Chromium at {CHROMIUM} did not start: {error}")
    yield launched
    launched.close()
    playwright.stop()


@pytest.fixture(scope="module")
def screenshots(request: pytest.FixtureRequest) -> Path:
    assert request.config.cache is not None
    directory = request.config.cache.mkdir("admin-screenshots")
    print(f"\nadmin page screenshots: {directory}")
    return directory


class Operator:
    """One browser context (its own cookies) on the page, saving each view it looks at."""

    def __init__(self, browser: Browser, gateway: GatewayProcess, screenshots: Path) -> None:
        self.gateway = gateway
        self.screenshots = screenshots
        self.context = browser.new_context(viewport=LAPTOP, base_url=gateway.base_url)
        self.context.set_default_timeout(WAIT_MS)
        self.page = self.context.new_page()
        # Everything the page loads, and what the browser complains about (a stylesheet or
        # script the page's Content-Security-Policy refuses shows up here).
        self.requested: list[str] = []
        self.complaints: list[str] = []
        self.page.on("request", lambda request: self.requested.append(request.url))
        self.page.on(
            "console",
            lambda message: (
                self.complaints.append(message.text) if message.type == "error" else None
            ),
        )

    def log_in(self, token: str = ADMIN_TOKEN) -> int:
        self.page.goto("/admin/")
        self.page.fill("input[name=token]", token)
        with self.page.expect_response(lambda answer: answer.url.endswith("/login")) as login:
            self.page.click("button[type=submit]")
        self.page.wait_for_load_state()
        return int(login.value.status)

    def look(self, name: str) -> str:
        """The view's HTML, checked for the token, and its screenshot; the page has loaded
        nothing from anywhere but the gateway, and the browser has nothing to complain of."""
        html: str = self.page.content()
        assert ADMIN_TOKEN not in html
        assert WRONG_TOKEN not in html
        assert [url for url in self.requested if not url.startswith(self.gateway.base_url)] == []
        assert [text for text in self.complaints if "401" not in text] == []
        self.page.screenshot(path=str(self.screenshots / f"{name}.png"))
        return html

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def operator(browser: Browser, gateway: GatewayProcess, screenshots: Path) -> Iterator[Operator]:
    operator = Operator(browser, gateway, screenshots)
    assert operator.log_in() == 303
    yield operator
    operator.close()


def _deliveries_in_file(gateway: GatewayProcess, event_id: str) -> int:
    path = gateway.workdir / "data" / "events.jsonl"
    if not path.exists():
        return 0
    lines = path.read_bytes().splitlines()
    return sum(1 for line in lines if msgspec.json.decode(line)["event"]["id"] == event_id)


def _event_id(gateway: GatewayProcess, subject: str) -> str:
    answer = httpx.get(
        f"{gateway.base_url}/admin/api/events", params={"subject": subject}, headers=AUTH
    )
    [item] = answer.json()["items"]
    return str(item["id"])


def test_login_with_a_wrong_token_shows_the_form_again_with_401(
    browser: Browser, gateway: GatewayProcess, screenshots: Path
) -> None:
    operator = Operator(browser, gateway, screenshots)
    try:
        assert operator.log_in(WRONG_TOKEN) == 401
        assert operator.page.locator("[role=alert]").inner_text() == "That token is not right."
        operator.look("login-refused")
        assert operator.context.cookies() == []
    finally:
        operator.close()


def test_the_session_cookie_is_httponly_strict_and_not_the_token(operator: Operator) -> None:
    [cookie] = operator.context.cookies()
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/admin"
    assert ADMIN_TOKEN not in cookie["value"]
    # Script on the page cannot read it.
    assert operator.page.evaluate("document.cookie") == ""


def test_logging_out_deletes_the_cookie_and_shows_the_login_form(operator: Operator) -> None:
    operator.page.goto("/admin/subscribers")
    operator.page.click("button:has-text('Log out')")
    operator.page.locator("input[name=token]").wait_for()
    assert operator.context.cookies() == []
    operator.page.goto("/admin/subscribers")
    assert operator.page.url.endswith("/admin/")
    assert operator.page.locator("input[name=token]").count() == 1


def test_a_posted_event_appears_by_itself_then_opens_and_replays(
    operator: Operator, gateway: GatewayProcess
) -> None:
    page = operator.page
    page.goto("/admin/")
    subject = f"pay_live_{time.time_ns()}"
    # Posted after the page is open: only the page's own refresh can show it.
    post_finchpay(gateway, subject)
    row = page.locator("#events tbody tr", has_text=subject)
    row.wait_for()
    row.locator(".badge.delivered").wait_for()
    # The live strip has read the counters at least twice by now: a rate, not a dash.
    expect(page.locator("#rate-in")).not_to_have_text("\N{EN DASH}", timeout=WAIT_MS)
    operator.look("events")

    row.locator("a").click()
    page.wait_for_url(re.compile(r"/admin/events/evt_"))
    event_id = page.url.rsplit("/", 1)[1]
    pretty = page.locator("#event-json").inner_text()
    assert msgspec.json.decode(pretty)["subject"] == subject
    assert '\n  "type": "payment.succeeded",' in pretty
    audit = page.locator(".delivery[data-subscriber=audit]")
    assert audit.locator("h3 .badge").inner_text() == "delivered"
    assert audit.locator("tbody tr").count() == 1
    operator.look("event")
    assert _deliveries_in_file(gateway, event_id) == 1

    page.click("form.replay button[type=submit]")
    page.wait_for_url(re.compile(r"did=replayed"))
    assert page.locator("[role=status]").inner_text().startswith("Replayed to 1 subscriber")
    wait_for(lambda: _deliveries_in_file(gateway, event_id) == 2, timeout=20)
    # The page shows the second attempt by itself too.
    audit.locator("tbody tr").nth(1).wait_for()
    operator.look("event-replayed")


def test_pause_holds_deliveries_and_resume_sends_them(
    operator: Operator, gateway: GatewayProcess
) -> None:
    page = operator.page
    page.goto("/admin/subscribers")
    row = page.locator("tr[data-subscriber=audit]")
    assert row.locator(".badge").inner_text() == "active"
    row.locator("button", has_text="Pause").click()
    page.wait_for_url(re.compile(r"did=paused"))
    assert row.locator(".badge").inner_text() == "paused"
    # A running dispatcher reads pauses from the store once per poll: a delivery it claims in
    # that second still goes out (gateway/delivery/dispatcher.py, _refresh_circuits).
    time.sleep(POLL_SECONDS * 1.5)

    subject = f"pay_paused_{time.time_ns()}"
    post_finchpay(gateway, subject)
    event_id = _event_id(gateway, subject)
    # The strip's backlog and the table show it waiting; nothing reaches the subscriber.
    page.locator("#backlog .chip.paused", has_text="audit 1 paused").wait_for()
    expect(row.locator("td.pending")).to_have_text("1", timeout=WAIT_MS)
    operator.look("subscribers-paused")
    time.sleep(2.5)  # more than two of the dispatcher's 1 s polls
    assert _deliveries_in_file(gateway, event_id) == 0

    row.locator("button", has_text="Resume").click()
    page.wait_for_url(re.compile(r"did=resumed"))
    assert row.locator(".badge").inner_text() == "active"
    wait_for(lambda: _deliveries_in_file(gateway, event_id) == 1, timeout=20)
    expect(row.locator("td.pending")).to_have_text("0", timeout=WAIT_MS)
    operator.look("subscribers")


def test_dead_letters_redrive_and_quarantine_views(
    operator: Operator, gateway: GatewayProcess
) -> None:
    page = operator.page
    page.on("dialog", lambda dialog: dialog.accept())
    # A lifecycle event for `ledger`, which nobody answers: dead after its one retry.
    lifecycle = msgspec.json.encode(
        {
            "message": "Balance Update",
            "identifier": "BALANCE_UPDATE",
            "code": 3019,
            "balance": 500,
            "transactionId": f"tx_{time.time_ns()}",
        }
    )
    answer = gateway.post("lifecycle", lifecycle, params={"token": TOKEN})
    assert answer.status_code == 200, answer.text
    # A FinchPay body without its fields: authenticated, unreadable, kept in quarantine.
    answer = gateway.post("finchpay", b'{"id": "pay_broken"}', params={"token": TOKEN})
    assert answer.status_code == 422, answer.text

    page.goto("/admin/dead-letters")
    row = page.locator("tbody tr", has_text="ledger")
    row.wait_for()
    operator.look("dead-letters")
    page.click("button:has-text('Redrive all')")
    page.wait_for_url(re.compile(r"did=redriven"))
    assert page.locator("[role=status]").inner_text().startswith("Redrove 1 dead letter")

    page.goto("/admin/quarantine")
    row = page.locator("tbody tr", has_text="finchpay")
    assert row.count() == 1
    operator.look("quarantine")
    # Reprocessed by today's adapter it is still unreadable, so it stays.
    page.click("button:has-text('Reprocess all')")
    page.wait_for_url(re.compile(r"did=reprocessed"))
    notice = page.locator("[role=status]").inner_text()
    assert notice == "Reprocessed the quarantine: 0 released, 1 still invalid."
    row.locator("button", has_text="Drop").click()
    page.wait_for_url(re.compile(r"did=dropped"))
    assert page.locator("tbody tr", has_text="finchpay").count() == 0


def test_a_post_without_the_csrf_token_is_refused(
    operator: Operator, gateway: GatewayProcess
) -> None:
    # The browser's own cookie rides along, as it would on a form another site posts.
    request = operator.context.request
    for form in ({}, {"csrf_token": "forged"}):
        answer = request.post(f"{gateway.base_url}/admin/subscribers/audit/pause", form=form)
        assert answer.status == 403
    subscribers = httpx.get(f"{gateway.base_url}/admin/api/subscribers", headers=AUTH).json()
    assert {item["name"]: item["state"] for item in subscribers}["audit"] == "active"


def test_the_token_and_the_cookie_never_reach_the_log(
    operator: Operator, gateway: GatewayProcess
) -> None:
    [cookie] = operator.context.cookies()
    operator.page.goto("/admin/subscribers")
    refused = httpx.post(f"{gateway.base_url}/admin/login", data={"token": WRONG_TOKEN})
    assert refused.status_code == 401
    logs = gateway.logs_once_they_say("admin_login_refused")
    assert "admin_login" in logs
    assert ADMIN_TOKEN not in logs
    assert WRONG_TOKEN not in logs
    assert cookie["value"] not in logs
    assert cookie["value"].split(".")[0] not in logs
    # Each page request is logged, with the id its answer carried.
    answer = operator.context.request.get(f"{gateway.base_url}/admin/subscribers")
    request_id = answer.headers["x-request-id"]
    line = next(
        line for line in gateway.logs_once_they_say(request_id).splitlines() if request_id in line
    )
    assert msgspec.json.decode(line)["event"] == "admin_page_request"
