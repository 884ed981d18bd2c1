"""End to end in a real headless Chromium: the server under uvicorn, clicked through with Playwright.

Needs Debian's chromium (``apt-get install -y chromium``) and ``pip install playwright``;
Playwright's own browser download is never used.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(small_run):
    """The real app under uvicorn on a free 127.0.0.1 port, in a thread; stopped after the test."""
    import uvicorn

    from hopforge.viewer import create_app

    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(small_run), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def page():
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium: install Debian's browser with `apt-get install -y chromium`")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield browser.new_page()
        finally:
            browser.close()


def test_click_from_question_list_to_trajectory(server, page, tmp_path):
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("dialog", lambda d: (errors.append(f"dialog: {d.message}"), d.dismiss()))

    page.goto(f"{server}/questions?hops=2")
    assert page.locator("#total").inner_text() == "1"
    page.get_by_role("link", name="Who surveyed the valley below the observatory").click()

    page.wait_for_url("**/q/q1")
    chain = page.locator("#chain .title").all_inner_texts()
    assert chain == ["Rivermouth Observatory", "Halden Vale", "Orrin Castellane"]
    assert page.locator("#chain mark").first.inner_text() == "Halden"
    page.get_by_role("link", name="attempt 0").click()

    page.wait_for_url("**/t/t1")
    # The escaped <script> from an observation is text, and never ran.
    first_obs = page.locator("#turn-3 details.observation")
    assert first_obs.get_attribute("open") is None  # collapsed by default
    assert not page.locator("#turn-3 pre").is_visible()
    first_obs.locator("summary").click()
    assert '<script>alert("pwned")</script>' in page.locator("#turn-3 pre").inner_text()
    # Jump to the turn where the answer first appears: its observation is open, the answer marked.
    page.get_by_role("link", name="The answer first appears in an observation at turn 5").click()
    page.wait_for_url("**/t/t1#turn-5")
    answer_turn = page.locator("#turn-5")
    assert answer_turn.is_visible()
    assert answer_turn.locator("mark.answer").inner_text() == "orrin castellane"
    assert page.evaluate("() => window.scrollY") > 0 or page.evaluate(
        "() => document.documentElement.scrollHeight <= window.innerHeight")
    # The loss-weight colours a person sees: a trained turn green, a masked one grey.
    border = page.eval_on_selector("#turn-2", "el => getComputedStyle(el).borderLeftColor")
    assert border == "rgb(46, 158, 80)"
    assert page.eval_on_selector("#turn-3", "el => getComputedStyle(el).borderLeftColor") == "rgb(185, 190, 199)"
    assert page.locator("#context-4").inner_text() == "context summarized at turn 4"
    shot = tmp_path / "trajectory.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    assert errors == []


def test_sql_box_in_the_browser_shows_the_guards_refusal(server, page):
    page.goto(f"{server}/sql")
    page.locator("textarea[name=q]").fill("COPY questions TO '/tmp/hopforge-leak.csv'")
    page.get_by_role("button", name="run").click()
    page.wait_for_selector("#sql-error")
    assert page.locator("#sql-error").inner_text().startswith("COPY statements are refused")
    page.locator("textarea[name=q]").fill("SELECT hops, count(*) AS n FROM questions GROUP BY hops ORDER BY hops")
    page.get_by_role("button", name="run").click()
    page.wait_for_selector("#result")
    assert page.locator("#result tr").nth(1).inner_text().split() == ["1", "1"]
