"""The demo page in a real browser: Debian's chromium, headless, driven by selenium through chromedriver.

The sim sends 8 chunks 0.3 s apart; the page must show them as they arrive (its own
``performance.now()`` stamps spread over the stream), not all at once from a buffered answer.
``./dev test`` installs the browser with ``.ci/install-browser``; without it the test fails with the reason
(``MOONRELAY_SKIP_BROWSER=1`` skips it, never silently). With ``MOONRELAY_SCREENSHOT=PATH`` the test saves
the page after the answer (``docs/demo.png`` was made that way).
"""

import json
import os

import httpx
import pytest
import trio

from tests.conftest import start_relay, start_sim
from tests.support.browser import MARKS, MISSING, chromium

pytestmark = MARKS

CHUNKS = 8
INTERVAL_S = 0.3
PROMPT = "Why does the moon have phases?"


async def _expected_text(sim_url: str) -> str:
    """What the sim says to the page's request (same model and messages), fetched at full speed."""
    body = {
        "model": "moonshot-v1-8k",  # the relay's default, which the page's "(default)" choice gets
        "messages": [{"role": "user", "content": PROMPT}],
        "stream": True,
        "sim_ttft": 0,
        "sim_interval": 0,
    }
    async with httpx.AsyncClient(timeout=10) as client:
        resp = await client.post(sim_url + "/chat/completions", json=body)
    text = ""
    for line in resp.text.splitlines():
        if line.startswith("data: {"):
            choices = json.loads(line[6:])["choices"]
            if choices:
                text += choices[0]["delta"].get("content") or ""
    return text


def _drive(root: str, screenshot: str | None) -> tuple[str, list[dict], str]:
    """Blocking: open the page, send the prompt, wait for the answer; (answer, pieces, TTFC text)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with chromium() as driver:
        driver.get(root + "/")
        wait = WebDriverWait(driver, 10)
        # The model picker is filled from /v1/models.
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#model option")) > 1)
        prompt = driver.find_element(By.ID, "prompt")
        prompt.clear()
        prompt.send_keys(PROMPT)
        driver.find_element(By.ID, "send").click()
        wait.until(lambda d: d.execute_script("return window.demoState") in ("done", "error"))
        assert driver.execute_script("return window.demoState") == "done", driver.find_element(By.ID, "error").text
        answer = driver.find_element(By.ID, "answer").text
        pieces = driver.execute_script("return window.pieces")
        ttfc = driver.find_element(By.ID, "ttfc").text
        if screenshot:
            os.makedirs(os.path.dirname(os.path.abspath(screenshot)), exist_ok=True)
            driver.save_screenshot(screenshot)
        return answer, pieces, ttfc


async def test_page_streams_token_by_token(nursery):
    if MISSING:
        pytest.fail(MISSING)  # a fresh machine must not pass the suite without this test (before starting servers)
    sim = await start_sim(nursery, ttft=0.2, interval=INTERVAL_S, chunks=CHUNKS)
    root = await start_relay(nursery, sim.url)
    expected = await _expected_text(sim.url)
    screenshot = os.environ.get("MOONRELAY_SCREENSHOT")
    answer, pieces, ttfc = await trio.to_thread.run_sync(_drive, root, screenshot)
    assert "".join(p["text"] for p in pieces) == expected
    assert answer == expected.strip()  # innerText trims the leading space of the first word
    assert len(pieces) == CHUNKS
    assert ttfc.endswith("ms")
    stamps = [p["t"] for p in pieces]
    assert stamps == sorted(stamps)
    spread_ms = stamps[-1] - stamps[0]
    stream_ms = (CHUNKS - 1) * INTERVAL_S * 1000
    assert spread_ms >= 0.6 * stream_ms, f"pieces arrived within {spread_ms:.0f} ms, the stream took {stream_ms:.0f}"
