"""Berth's pages in a real browser (Debian's Chromium): the home page's session cards, the spawn
form's inline validation, the pending page's progress, and the walk launch -> card -> open ->
extend -> stop. Screenshots go to test-artifacts/ (the README's tour uses them, from docs/tour/)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from .browser import chromium, log_in
from .hubtest import USER_PASSWORD, Hub
from .stand_ins import release, stand_in_hub

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    with stand_in_hub(tmp_path_factory.mktemp("pages-hub")) as hub:
        for name in ("erin", "frank"):
            hub.create_user(name)
        yield hub


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


def logged_in(browser: Browser, hub: Hub, user: str) -> Page:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    log_in(page, hub.url, user, USER_PASSWORD)
    return page


@pytest.fixture
def frank(browser: Browser, hub: Hub) -> Iterator[Page]:
    page = logged_in(browser, hub, "frank")
    yield page
    page.context.close()


def test_cards_show_each_session_and_its_state(frank: Page, hub: Hub, artifacts: Path) -> None:
    token = hub.token("frank")
    r = hub.start_session("frank", "lab", {"service": "jupyter", "profile": "gpu-1"}, token=token)
    assert r.status_code == 202, r.text
    r = hub.start_session("frank", "q-train", {"service": "jupyter", "profile": "cpu-large"},
                          token=token)  # fmt: skip
    assert r.status_code == 202, r.text
    hub.wait_ready("frank", "lab")

    frank.goto(f"{hub.url}/hub/home")
    lab = frank.get_by_test_id("card-lab")
    expect(lab.locator(".berth-state")).to_have_text("Running")
    expect(lab).to_contain_text("JupyterLab")
    expect(lab.locator(".berth-resources")).to_contain_text("1 GPU")
    expect(lab.get_by_test_id("gpu-badge")).to_have_text("1 \u00d7 A100")
    expect(lab.get_by_role("link", name="Open")).to_have_attribute("href", "/user/frank/lab/lab")
    queued = frank.get_by_test_id("card-q-train")
    expect(queued.locator(".berth-state")).to_have_text("Queued")
    expect(queued.locator(".berth-progress")).to_contain_text(
        "Job 4242 is queued in partition gpu: waiting for GPUs to be free (Resources);"
        " expected start"
    )
    expect(queued.locator(".berth-progress")).to_contain_text("(in 12 minutes)")
    expect(queued.get_by_role("link", name="Open")).to_have_class(re.compile("disabled"))
    frank.screenshot(path=str(artifacts / "home-cards.png"), full_page=True)

    # the queued one starts: its card turns into a running one by itself
    release(hub, "q-train")
    expect(queued.locator(".berth-state")).to_have_text("Running", timeout=120_000)
    expect(frank.get_by_test_id("card-q-train").locator(".berth-resources")).to_contain_text("32G")

    # Stop from the card: the hub's own API with the page's XSRF token
    frank.get_by_test_id("card-q-train").get_by_role("button", name="Stop").click()
    expect(frank.get_by_test_id("card-q-train")).to_have_count(0, timeout=60_000)
    expect(frank.locator('tr[data-session="q-train"]')).to_contain_text(
        "q-train JupyterLab on Large CPU"
    )
    server = hub.server("frank", "q-train")
    assert server is not None and server["stopped"]
    frank.locator('tr[data-session="q-train"]').get_by_role("button", name="Delete").click()
    expect(frank.locator('tr[data-session="q-train"]')).to_have_count(0)
    assert hub.server("frank", "q-train") is None
    hub.stop_session("frank", "lab", remove=True)


def test_the_pending_page_shows_the_queue_and_the_way_on(
    frank: Page, hub: Hub, artifacts: Path
) -> None:
    frank.goto(f"{hub.url}/hub/spawn/frank/q-wait")
    frank.get_by_test_id("tile-jupyter").click()
    frank.click("[type=submit]")
    frank.wait_for_url(re.compile(r".*/hub/spawn-pending/frank/q-wait"))
    expect(frank.locator("#berth-phase")).to_have_text("Queued")
    expect(frank.locator("#progress-message")).to_contain_text("Job 4242 is queued")
    expect(frank.locator("#progress-log li")).to_have_count(2)  # "Server requested", queued
    expect(frank.locator(".berth-pending")).to_contain_text("berth wait q-wait")
    frank.screenshot(path=str(artifacts / "pending-queued.png"), full_page=True)
    release(hub, "q-wait")
    frank.wait_for_url(re.compile(r".*/user/frank/q-wait/lab.*"), timeout=120_000)
    hub.stop_session("frank", "q-wait", remove=True)


def test_the_spawn_form_checks_as_the_server_does(frank: Page, hub: Hub, artifacts: Path) -> None:
    frank.goto(f"{hub.url}/hub/spawn/frank/llm")
    frank.get_by_test_id("tile-vllm").click()
    vllm = frank.locator("fieldset[data-service=vllm]")
    model = vllm.locator("input[name='vllm.input.model']")
    model.fill("not a model")
    feedback = frank.get_by_test_id("feedback-vllm-model")
    expect(feedback).to_contain_text("'not a model'".replace("'", '"') + " does not match")
    expect(model).to_have_class(re.compile("is-invalid"))
    model.fill("meta-llama/Llama-3.1-8B-Instruct")
    expect(feedback).to_have_text("")
    expect(model).not_to_have_class(re.compile("is-invalid"))

    length = vllm.locator("input[name='vllm.input.max_model_len']")
    length.fill("100")
    expect(frank.get_by_test_id("feedback-vllm-max_model_len")).to_have_text(
        "100 is below the minimum of 512"
    )
    length.fill("2048.5")
    expect(frank.get_by_test_id("feedback-vllm-max_model_len")).to_have_text(
        'expected a whole number, got "2048.5"'
    )
    hours = vllm.locator("input[name='vllm.hours']")
    hours.fill("9")
    expect(frank.get_by_test_id("feedback-vllm-hours")).to_have_text(
        "9 hours is longer than the 8 hours allowed for vllm on this profile; ask for at most 8"
    )
    frank.screenshot(path=str(artifacts / "spawn-form-inline-validation.png"), full_page=True)
    # nothing is sent while the form is wrong
    frank.click("[type=submit]")
    expect(hours).to_be_focused()
    assert frank.url.endswith("/hub/spawn/frank/llm")
    assert not ever_started(hub, "frank", "llm")

    # a required input left empty
    model.fill("")
    hours.fill("2")
    length.fill("")
    frank.click("[type=submit]")
    expect(frank.get_by_test_id("feedback-vllm-model")).to_have_text("This is required.")
    assert not ever_started(hub, "frank", "llm")


def ever_started(hub: Hub, user: str, name: str) -> bool:
    """The spawn page itself makes a record of the named server; was it ever started?"""
    server = hub.server(user, name)
    return server is not None and bool(server["started"] or server["pending"] or server["ready"])


def test_tour_launch_card_open_extend_stop(browser: Browser, hub: Hub, artifacts: Path) -> None:
    """The README's tour: each step's screenshot is test-artifacts/tour-*.png."""
    page = logged_in(browser, hub, "erin")
    # 1. launch from the spawn page
    page.goto(f"{hub.url}/hub/home")
    page.locator("#berth-new-name").fill("My Analysis")
    page.get_by_role("button", name="New session").click()
    expect(page.locator(".berth-new-help")).to_be_visible()
    assert page.url.endswith("/hub/home")
    page.locator("#berth-new-name").fill("analysis")
    page.get_by_role("button", name="New session").click()
    page.wait_for_url(re.compile(r".*/hub/spawn/erin/analysis"))
    page.get_by_test_id("tile-jupyter").click()
    jupyter = page.locator("fieldset[data-service=jupyter]")
    jupyter.get_by_text("1 GPU").click()
    jupyter.locator("input[name='jupyter.hours']").fill("2")
    page.screenshot(path=str(artifacts / "tour-1-spawn.png"), full_page=True)
    page.click("[type=submit]")
    page.wait_for_url(re.compile(r".*/user/erin/analysis/lab.*"), timeout=120_000)
    expect(page.locator("#jp-main-dock-panel")).to_be_visible(timeout=60_000)

    # 2. the card: resources, state, deadlines from berth-culler
    page.goto(f"{hub.url}/hub/home")
    card = page.get_by_test_id("card-analysis")
    expect(card.locator(".berth-state")).to_have_text("Running")
    expect(card.get_by_test_id("gpu-badge")).to_have_text("1 \u00d7 A100")
    # gpu-1's policy: idle limit 30 minutes, 2 hours asked for, 4 hours of extension
    expect(card.locator(".berth-left")).to_contain_text(re.compile(r"^1h 59m|^2h"))
    expect(card.locator(".berth-idle")).to_contain_text(re.compile(r"unless used \((29m|30m)"))
    expect(card.locator(".berth-ext")).to_have_text("0s used of 4h, 4h left")
    page.screenshot(path=str(artifacts / "tour-2-card.png"), full_page=True)

    # 3. Open: the session in a new tab
    with page.context.expect_page() as opened:
        card.get_by_role("link", name="Open").click()
    lab = opened.value
    lab.wait_for_url(re.compile(r".*/user/erin/analysis/lab.*"))
    expect(lab.locator("#jp-main-dock-panel")).to_be_visible(timeout=60_000)
    expect(lab.locator("#jupyterlab-splash")).to_have_count(0, timeout=60_000)
    lab.screenshot(path=str(artifacts / "tour-3-open.png"))
    lab.close()

    # 4. Extend by an hour (berth-culler's API, with a token the page asked the hub for)
    card.locator(".berth-extend-hours").select_option("1")
    card.get_by_role("button", name="Extend").click()
    expect(card.locator(".berth-message")).to_contain_text("Extended by 1h: it may run until")
    expect(card.locator(".berth-ext")).to_have_text("1h used of 4h, 3h left")
    expect(card.locator(".berth-left")).to_contain_text(re.compile(r"^2h 59m|^3h"))
    page.screenshot(path=str(artifacts / "tour-4-extended.png"), full_page=True)
    server = hub.server("erin", "analysis")
    assert server is not None and server["ready"]
    r = hub.get("/services/berth-culler/api/sessions/erin/analysis", token=hub.token("erin"))
    assert r.json()["extension"]["used_seconds"] == 3600
    # the page's token may reach berth-culler and nothing else
    tokens = hub.api("GET", "/users/erin/tokens").json()["api_tokens"]
    page_tokens = [t for t in tokens if t["note"] == "berth home page: session deadlines"]
    assert len(page_tokens) == 1
    scopes = set(page_tokens[0]["scopes"])
    # (the hub adds to every token the right to read its owner's own name and groups)
    assert scopes - {"read:users:name!user=erin", "read:users:groups!user=erin"} == {
        "access:services!service=berth-culler"
    }

    # 5. Stop
    card.get_by_role("button", name="Stop").click()
    expect(page.get_by_test_id("card-analysis")).to_have_count(0, timeout=60_000)
    expect(page.locator('tr[data-session="analysis"]')).to_contain_text("JupyterLab on 1 GPU")
    page.screenshot(path=str(artifacts / "tour-5-stopped.png"), full_page=True)
    server = hub.server("erin", "analysis")
    assert server is not None and server["stopped"]
    page.context.close()
