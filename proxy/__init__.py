"""berth-gate: runs a web service beside a session and serves it behind the hub's own login.

:mod:`.cli` is the command; :mod:`.gate` its life cycle; :mod:`.server` and :mod:`.upstream` the
HTTP/1.1 proxy (httptools parsing, keep-alive pool, websocket pipes); :mod:`.auth` the hub's
OAuth; :mod:`.activity` activity reports; :mod:`.headers` the pure header and path rules;
:mod:`.pages` what the gate answers itself; :mod:`.service` the supervised process;
:mod:`.memory` the allocator settings that keep socket-read buffers for reuse.
"""

__all__: list[str] = []
