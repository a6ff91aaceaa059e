"""berth-culler against a real JupyterHub and configurable-http-proxy, with the clock moved."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from tornado import web
from tornado.httpserver import HTTPServer

from berth.services import CULLER_SCOPES, clock, culler_config
from berth.services.culler import Culler
from berth.services.deadlines import SessionKey
from berth.services.webhook import Webhook

from .conftest import FakeClock
from .hub import free_port
from .livehub import CULLER_TOKEN, PREFIX, LiveHub, call, close_culler, make_culler, unique

WEB_8H = {"service": "web", "profile": "cpu", "hours": 8}  # idle timeout 20m
JUPYTER_30M = {"service": "jupyter", "profile": "cpu", "hours": 0.5}  # idle timeout 1h


def ready(live: LiveHub, user: str, name: str) -> bool:
    model = live.hub.server(user, name)
    return bool(model and model["ready"] and not model["pending"])


def test_the_culler_role_has_exactly_its_scopes(live_hub: LiveHub) -> None:
    service, role = culler_config("/etc/berth.yaml", port=12345)
    assert role == {
        "name": "berth-culler",
        "description": "berth-culler: read ready servers and groups, stop expired sessions",
        "scopes": ["list:users", "read:servers", "read:users:groups", "delete:servers"],
        "services": ["berth-culler"],
    }
    assert service["url"] == "http://127.0.0.1:12345"
    assert service["command"][1:] == ["-m", "berth.services.app", "--catalog=/etc/berth.yaml"]
    status, model = live_hub.hub.request("GET", "/services/berth-culler")
    assert (status, model["roles"], model["prefix"]) == (200, ["berth-culler"], PREFIX)
    status, me = live_hub.hub.request("GET", "/user", token=CULLER_TOKEN)
    assert status == 200
    # what the token can do, expanded by the hub: nothing beyond reading and stopping servers
    assert sorted(me["scopes"]) == [
        "delete:servers",
        "list:users",
        "read:servers",
        "read:users:groups",
        "read:users:name",
    ]


async def test_a_pass_ends_idle_and_expired_sessions_and_nothing_else(
    live_hub: LiveHub, db_url: str, fake_clock: FakeClock
) -> None:
    hub = live_hub.hub
    alice, bob, carol = unique("alice"), unique("bob"), unique("carol")
    hub.create_user(alice)
    hub.create_user(bob, groups=("no-idle",))
    hub.create_user(carol)
    hub.start_server(alice, "idle", WEB_8H)
    hub.start_server(alice, "busy", WEB_8H)
    hub.start_server(bob, "short", JUPYTER_30M)
    hub.start_server(bob, "long", {"service": "jupyter", "profile": "cpu", "hours": 2})
    status, _ = hub.request("POST", f"/users/{carol}/servers/stuck", {**WEB_8H, "hang": True})
    assert status == 202

    culler = make_culler(live_hub, db_url)
    try:
        fake_clock.advance(minutes=15)
        first = await culler.run_pass()
        assert first.complete and first.ended == {} and first.failed == {}

        # alice works in "busy" 25 minutes in; nobody touches anything else
        used_at = clock.isoformat(fake_clock.advance(minutes=10))
        status, _ = hub.request(
            "POST", f"/users/{alice}/activity", {"servers": {"busy": {"last_activity": used_at}}}
        )
        assert status == 200
        fake_clock.advance(minutes=10)  # 35 minutes in
        report = await culler.run_pass()
        assert report.complete, report.error
        ended = {k: v for k, v in report.ended.items() if k.split("/")[0] in (alice, bob, carol)}
        assert ended == {f"{alice}/idle": "idle", f"{bob}/short": "duration"}
        assert not ready(live_hub, alice, "idle")
        assert not ready(live_hub, bob, "short")
        assert ready(live_hub, alice, "busy")  # in use
        assert ready(live_hub, bob, "long")  # within its 2h, never idle-ended (no-idle group)
        assert hub.server(carol, "stuck")["pending"] == "spawn"  # pending: never ended

        again = await culler.run_pass()
        assert not [k for k in again.ended if k.split("/")[0] in (alice, bob, carol)]
        ends = [e for e in culler.ledger.history([alice, bob, carol]) if e.kind == "end"]
        assert sorted((e.user, e.server, e.detail["reason"], e.detail["status"]) for e in ends) == [
            (alice, "idle", "idle", "ended"),
            (bob, "short", "duration", "ended"),
        ]
    finally:
        close_culler(culler)
        hub.request("DELETE", f"/users/{carol}/servers/stuck")


async def test_a_session_in_use_at_the_end_of_its_time_is_extended_not_ended(
    live_hub: LiveHub, db_url: str, fake_clock: FakeClock
) -> None:
    hub = live_hub.hub
    dana = unique("dana")
    hub.create_user(dana, groups=("no-idle",))
    hub.start_server(dana, "train", {"service": "jupyter", "profile": "cpu", "hours": 1})
    culler = make_culler(live_hub, db_url)
    try:
        used_at = clock.isoformat(fake_clock.advance(minutes=55))
        status, _ = hub.request(
            "POST", f"/users/{dana}/activity", {"servers": {"train": {"last_activity": used_at}}}
        )
        assert status == 200
        fake_clock.advance(minutes=6)  # past its hour, used 6 minutes ago
        report = await culler.run_pass()
        assert report.complete, report.error
        assert f"{dana}/train" not in report.ended
        assert report.extended.get(f"{dana}/train") == 1.0
        assert ready(live_hub, dana, "train")
        (extension,) = [e for e in culler.ledger.history([dana]) if e.kind == "extension"]
        assert extension.detail["requested_by"] == "berth-culler"
        assert extension.detail["reason"] == "in use at the end of its time"

        fake_clock.advance(minutes=60)  # its new end; not used since
        report = await culler.run_pass()
        assert report.ended.get(f"{dana}/train") == "duration"
        assert not ready(live_hub, dana, "train")
    finally:
        close_culler(culler)


async def test_each_scope_of_the_role_is_needed(
    live_hub: LiveHub, db_url: str, fake_clock: FakeClock
) -> None:
    hub = live_hub.hub
    admin, dave = unique("admin"), unique("dave")
    hub.create_user(admin, admin=True)
    hub.create_user(dave)
    hub.start_server(dave, "old", JUPYTER_30M)
    fake_clock.advance(hours=1)
    outcomes = {}
    for missing in CULLER_SCOPES:
        token = hub.token_with_scopes(admin, [s for s in CULLER_SCOPES if s != missing])
        culler = make_culler(live_hub, db_url, retry_for=0)
        culler.hub.token = token
        try:
            report = await culler.run_pass()
        finally:
            close_culler(culler)
        outcomes[missing] = report.error or report.failed.get(f"{dave}/old", "")
    assert "HTTP 403" in outcomes["list:users"]
    assert "needs the read:servers scope" in outcomes["read:servers"]
    assert "needs the read:users:groups scope" in outcomes["read:users:groups"]
    assert "HTTP 403" in outcomes["delete:servers"]
    assert ready(live_hub, dave, "old")  # none of them could end it

    culler = make_culler(live_hub, db_url)
    culler.hub.token = hub.token_with_scopes(admin, list(CULLER_SCOPES))
    try:
        report = await culler.run_pass()
    finally:
        close_culler(culler)
    assert report.ended.get(f"{dave}/old") == "duration"


async def test_extend_through_the_proxy(
    live_hub: LiveHub, api: Culler, fake_clock: FakeClock
) -> None:
    hub = live_hub.hub
    erin, frank, root = unique("erin"), unique("frank"), unique("root")
    erin_token = hub.create_user(erin, groups=("no-idle",))
    frank_token = hub.create_user(frank)
    root_token = hub.create_user(root, admin=True)
    model = hub.start_server(erin, "gpu", {"service": "jupyter", "profile": "gpu", "hours": 1})
    started = clock.parse_time(model["started"])
    assert started is not None

    status, body = await call(
        live_hub, "POST", f"sessions/{erin}/gpu/extend", erin_token, {"hours": 1}
    )
    assert status == 200, body
    assert body["hard_deadline"] == clock.isoformat(started + timedelta(hours=2))
    assert body["extension"] == {"used_seconds": 3600, "cap_seconds": 7200, "left_seconds": 3600}
    assert body["extended_by_seconds"] == 3600

    refusals: list[tuple[str, Any, bytes | None, int, str]] = [
        (erin_token, {"hours": 1.5}, None, 409, "only 1h of the 2h extension cap is left"),
        (erin_token, {"hours": 3}, None, 400, "more than the extension cap of 2h"),
        (erin_token, {"hours": 0}, None, 400, "more than zero"),
        (erin_token, {"hours": -1}, None, 400, "more than zero"),
        (erin_token, {"hours": 1e12}, None, 400, "more than any extension cap allows"),
        (erin_token, {"hours": "two"}, None, 400, "must be a number"),
        (erin_token, {"hours": True}, None, 400, "must be a number"),
        (erin_token, {}, None, 400, "say how many hours"),
        (erin_token, {"hours": 1, "until": "never"}, None, 400, "unknown field"),
        (erin_token, None, b"{hours: 1", 400, "not valid JSON"),
        (erin_token, None, b"[1]", 400, "must be a JSON object"),
        (frank_token, {"hours": 1}, None, 403, "not your session"),
        ("not-a-token", {"hours": 1}, None, 401, "log in"),
    ]
    for token, body_json, raw, code, message in refusals:
        status, body = await call(
            live_hub, "POST", f"sessions/{erin}/gpu/extend", token, body_json, raw=raw
        )
        assert (status, message in str(body)) == (code, True), (body_json, raw, status, body)
    status, body = await call(
        live_hub, "POST", f"sessions/{erin}/nope/extend", erin_token, {"hours": 1}
    )
    assert (status, body["message"]) == (404, f"{erin} has no running session named 'nope'")
    status, body = await call(
        live_hub, "POST", f"sessions/{erin}/b%20d/extend", erin_token, {"hours": 1}
    )
    assert status == 400 and "not a valid session name" in body["message"]

    events = api.ledger.history([erin])
    assert [(e.kind, e.detail["seconds"]) for e in events] == [("extension", 3600.0)]

    # an admin extends anyone's session, within the cap
    fake_clock.advance(minutes=1)
    status, body = await call(
        live_hub, "POST", f"sessions/{erin}/gpu/extend", root_token, {"hours": 1, "reason": "demo"}
    )
    assert status == 200, body
    assert body["hard_deadline"] == clock.isoformat(started + timedelta(hours=3))
    status, body = await call(
        live_hub, "POST", f"sessions/{erin}/gpu/extend", erin_token, {"hours": 0.1}
    )
    assert (status, body["message"]) == (
        409,
        f"cannot extend {erin}/gpu: the extension cap of 2h is reached",
    )
    assert [(e.detail["requested_by"], e.detail["reason"]) for e in api.ledger.history([erin])] == [
        (root, "demo"),
        (erin, ""),
    ]

    # the deadlines the CLI and pages read
    status, listing = await call(live_hub, "GET", "sessions", erin_token)
    assert status == 200
    (mine,) = listing["sessions"]
    assert mine["id"] == f"{erin}/gpu"
    assert mine["idle_deadline"] is None  # the no-idle group
    assert mine["hard_deadline"] == mine["ends_at"] == mine["limit"]
    assert mine["ends_because"] == "duration"
    status, body = await call(live_hub, "GET", f"sessions?user={erin}", frank_token)
    assert status == 403
    status, body = await call(live_hub, "GET", f"sessions/{erin}/gpu", frank_token)
    assert status == 403

    # the pass respects the extensions: alive 2h59m in, ended at 3h
    fake_clock.current = started + timedelta(hours=2, minutes=59)
    report = await api.run_pass()
    assert f"{erin}/gpu" not in report.ended
    fake_clock.current = started + timedelta(hours=3)
    report = await api.run_pass()
    assert report.ended[f"{erin}/gpu"] == "duration"
    status, body = await call(live_hub, "GET", f"sessions/{erin}/gpu", erin_token)
    assert status == 404


async def test_warnings_in_the_api_and_the_webhook_once_per_deadline(
    live_hub: LiveHub, api: Culler, fake_clock: FakeClock
) -> None:
    received: list[tuple[dict[str, Any], str]] = []

    class Receiver(web.RequestHandler):
        def post(self) -> None:
            received.append(
                (json.loads(self.request.body), self.request.headers.get("X-Berth-Signature", ""))
            )
            self.set_status(204)

    port = free_port()
    receiver = HTTPServer(web.Application([("/hook", Receiver)]))
    receiver.listen(port, "127.0.0.1")
    api.webhook = Webhook(f"http://127.0.0.1:{port}/hook", secret="s3cret")
    hub = live_hub.hub
    gina = unique("gina")
    token = hub.create_user(gina, groups=("no-idle",))
    model = hub.start_server(gina, "nb", {"service": "jupyter", "profile": "cpu", "hours": 1})
    started = clock.parse_time(model["started"])
    assert started is not None
    try:
        fake_clock.current = started + timedelta(minutes=44)
        await api.run_pass()
        status, body = await call(live_hub, "GET", f"sessions/{gina}/nb", token)
        assert body["warning"] is None and received == []

        fake_clock.current = started + timedelta(minutes=46)
        await api.run_pass()
        status, body = await call(live_hub, "GET", f"sessions/{gina}/nb", token)
        assert body["warning"] == {
            "reason": "duration",
            "deadline": clock.isoformat(started + timedelta(hours=1)),
            "message": f"{gina}/nb: it ends in 14m; you may extend it by up to 4h",
        }
        assert body["seconds_left"] == 14 * 60
        fake_clock.current = started + timedelta(minutes=50)
        await api.run_pass()
        events = [e for e, _ in received if e["id"] == f"{gina}/nb"]
        assert [(e["event"], e["reason"], e["seconds_left"]) for e in events] == [
            ("session.warning", "duration", 14 * 60)
        ]
        event_json, signature = received[0]
        body_bytes = json.dumps(event_json, sort_keys=True).encode()
        expected = "sha256=" + hmac.new(b"s3cret", body_bytes, hashlib.sha256).hexdigest()
        assert signature == expected

        status, _ = await call(live_hub, "POST", f"sessions/{gina}/nb/extend", token, {"hours": 1})
        assert status == 200
        fake_clock.current = started + timedelta(minutes=110)
        await api.run_pass()
        fake_clock.current = started + timedelta(hours=2)
        await api.run_pass()
        events = [e for e, _ in received if e["id"] == f"{gina}/nb"]
        assert [(e["event"], e["deadline"]) for e in events] == [
            ("session.warning", clock.isoformat(started + timedelta(hours=1))),
            ("session.warning", clock.isoformat(started + timedelta(hours=2))),
            ("session.ended", clock.isoformat(started + timedelta(hours=2))),
        ]
    finally:
        receiver.stop()
        api.webhook.close()


async def test_hub_down_then_back_retries_with_backoff(
    live_hub: LiveHub, db_url: str, fake_clock: FakeClock
) -> None:
    hub = live_hub.hub
    henry = unique("henry")
    hub.create_user(henry, groups=("no-idle",))
    model = hub.start_server(henry, "nb", JUPYTER_30M)
    started = clock.parse_time(model["started"])
    assert started is not None
    culler = make_culler(live_hub, db_url, retry_for=3)
    try:
        hub.stop()
        fake_clock.current = started + timedelta(hours=1)
        report = await culler.run_pass()
        assert not report.complete
        assert "could not read the hub's server list" in report.error
        assert fake_clock.slept and fake_clock.slept == sorted(fake_clock.slept)  # backing off
        assert culler.ledger.history([henry]) == []  # nothing decided

        # the hub comes back while the culler is retrying
        fake_clock.slept.clear()
        real_sleep = fake_clock.sleep

        async def restart_hub_on_second_try(seconds: float) -> None:
            if len(fake_clock.slept) == 1:
                hub.start()
            await real_sleep(seconds)

        culler.hub.retry = type(culler.hub.retry)(retry_for=60)
        from berth.services import clock as clock_module

        clock_module.sleep = restart_hub_on_second_try  # type: ignore[assignment]
        try:
            report = await culler.run_pass()
        finally:
            clock_module.sleep = real_sleep  # type: ignore[assignment]
        assert report.complete, report.error
        assert len(fake_clock.slept) >= 2
        assert report.ended.get(f"{henry}/nb") == "duration"
    finally:
        if hub.process is None:
            hub.start()
        close_culler(culler)


async def test_no_session_is_ended_on_data_older_than_max_data_age(
    live_hub: LiveHub, db_url: str, fake_clock: FakeClock
) -> None:
    hub = live_hub.hub
    iris = unique("iris")
    hub.create_user(iris)
    hub.start_server(iris, "nb", JUPYTER_30M)
    culler = make_culler(live_hub, db_url)
    culler.max_data_age = timedelta(seconds=90)
    fake_clock.advance(hours=2)
    read_pages = culler.hub.ready_users

    async def slow_pages(page_size: int) -> AsyncIterator[list[dict[str, Any]]]:
        async for page in read_pages(page_size):
            yield page
            fake_clock.advance(minutes=5)  # the hub takes five minutes for what follows

    culler.hub.ready_users = slow_pages  # type: ignore[method-assign]
    try:
        report = await culler.run_pass()
        assert culler.ledger.history([iris]) == []
    finally:
        close_culler(culler)
    assert report.complete
    assert f"{iris}/nb" in report.stale
    assert f"{iris}/nb" not in report.ended
    assert ready(live_hub, iris, "nb")


async def test_restarts_of_culler_and_hub_keep_the_ledger_and_end_nothing_twice(
    live_hub: LiveHub, db_url: str, fake_clock: FakeClock
) -> None:
    hub = live_hub.hub
    jack, kate = unique("jack"), unique("kate")
    hub.create_user(jack, groups=("no-idle",))
    hub.create_user(kate, groups=("no-idle",))
    jack_model = hub.start_server(jack, "nb", JUPYTER_30M)
    kate_model = hub.start_server(kate, "nb", JUPYTER_30M)
    jack_started = clock.parse_time(jack_model["started"])
    kate_started = clock.parse_time(kate_model["started"])
    assert jack_started is not None and kate_started is not None

    first = make_culler(live_hub, db_url)
    first.ledger.add_extension(
        SessionKey(jack, "nb", jack_started), timedelta(hours=1), requested_by=jack,
        reason="", hard_deadline=jack_started + timedelta(minutes=90), at=jack_started,
    )  # fmt: skip
    # the culler decided to end kate's session, then died before it stopped it
    assert first.ledger.claim_end(
        SessionKey(kate, "nb", kate_started), "duration", "30m", kate_started, kate_started
    )
    close_culler(first)

    hub.stop()
    hub.start()  # the hub restarts; the servers keep running and keep their start times
    assert hub.server(jack, "nb")["started"] == jack_model["started"]

    fake_clock.current = jack_started + timedelta(hours=1)
    second = make_culler(live_hub, db_url)
    try:
        report = await second.run_pass()
        assert report.complete, report.error
        assert f"{jack}/nb" not in report.ended  # its extension survived both restarts
        assert report.ended.get(f"{kate}/nb") == "duration"  # the interrupted end, done once
        assert not ready(live_hub, kate, "nb")
        assert [e.detail["attempts"] for e in second.ledger.history([kate]) if e.kind == "end"] == [
            1
        ]
        fake_clock.current = jack_started + timedelta(minutes=91)
        report = await second.run_pass()
        assert report.ended.get(f"{jack}/nb") == "duration"
        assert f"{kate}/nb" not in report.ended
    finally:
        close_culler(second)
