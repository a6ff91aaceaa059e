"""The spawn page in a real browser: pick a service, a profile and a duration, get a session."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from .browser import chromium, log_in
from .hubtest import USER_PASSWORD, Hub

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


@pytest.fixture
def page(browser: Browser, local_hub: Hub) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    log_in(page, local_hub.url, "dana", USER_PASSWORD)
    yield page
    context.close()


def test_launch_jupyterlab_from_the_spawn_page(page: Page, local_hub: Hub, artifacts: Path) -> None:
    page.goto(f"{local_hub.url}/hub/spawn/dana/lab")
    # a tile per service the local machine can run; GPU-only ones (vLLM) are not offered here
    tiles = page.locator(".berth-tile")
    expect(tiles.filter(has_text="JupyterLab")).to_be_visible()
    expect(tiles.filter(has_text="Terminal")).to_be_visible()
    expect(tiles.filter(has_text="vLLM")).to_have_count(0)
    # choosing a tile shows that service's profiles with their resources
    page.get_by_test_id("tile-jupyter").click()
    jupyter = page.locator("fieldset[data-service=jupyter]")
    expect(jupyter).to_be_enabled()
    expect(jupyter.locator(".berth-profile")).to_have_count(2)
    expect(jupyter.locator(".berth-profile").first).to_contain_text("2 CPU")
    jupyter.get_by_text("Large CPU").click()
    expect(jupyter.locator(".berth-max")).to_have_text("8")
    jupyter.locator("input[name='jupyter.hours']").fill("1.5")
    page.screenshot(path=str(artifacts / "spawn-page.png"), full_page=True)

    page.click("[type=submit]")
    page.wait_for_url(re.compile(r".*/user/dana/lab/lab.*"), timeout=120_000)
    expect(page.locator("#jp-main-dock-panel")).to_be_visible(timeout=60_000)
    page.screenshot(path=str(artifacts / "jupyterlab-session.png"))

    server = local_hub.server("dana", "lab")
    assert server is not None and server["ready"]
    assert server["user_options"] == {
        "service": "jupyter",
        "profile": "cpu-large",
        "hours": 1.5,
        "inputs": {},
    }
    local_hub.stop_session("dana", "lab")


def test_a_refused_choice_is_explained_and_the_form_keeps_what_was_typed(
    page: Page, local_hub: Hub, artifacts: Path
) -> None:
    page.goto(f"{local_hub.url}/hub/spawn/dana/long")
    page.get_by_test_id("tile-terminal").click()
    hours = page.locator("input[name='terminal.hours']")
    # the page already refuses more than the maximum; get past it as a script would
    hours.fill("50")
    page.locator("form#spawn_form").evaluate("form => form.submit()")

    error = page.locator(".alert-danger, .alert-warning, #spawn-error, .error")
    expect(error.first).to_contain_text(
        "50 hours is longer than the 8 hours allowed for terminal on cpu-small"
    )
    expect(page.locator("input[name=service][value=terminal]")).to_be_checked()
    expect(page.locator("input[name='terminal.hours']")).to_have_value("50")
    expect(page.get_by_text("Session long:")).to_be_visible()
    page.screenshot(path=str(artifacts / "spawn-page-refused.png"), full_page=True)
    server = local_hub.server("dana", "long")
    assert server is None or not (server["ready"] or server["pending"])
