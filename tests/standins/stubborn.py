"""A service that leaves a grandchild behind and may ignore SIGTERM: for the no-orphans tests.

    python stubborn.py PORT PIDFILE [--ignore-term]

Serves "ok" on 127.0.0.1:PORT, starts `sleep 600` as its own child and writes that child's pid to
PIDFILE.
"""

import http.server
import signal
import subprocess
import sys

port, pidfile = int(sys.argv[1]), sys.argv[2]
if "--ignore-term" in sys.argv:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen(["sleep", "600"])
with open(pidfile, "w") as f:
    f.write(str(child.pid))


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
