"""A bare HTTP server whose responses end by closing the connection (no length, no chunks),
as old HTTP/1.0-style services do.  python eofserver.py PORT"""

import socket
import sys

server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", int(sys.argv[1])))
server.listen(16)
while True:
    conn, _ = server.accept()
    data = b""
    while b"\r\n\r\n" not in data:
        piece = conn.recv(4096)
        if not piece:
            break
        data += piece
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")
    conn.sendall(b"first part, " * 1000 + b"the end")
    conn.close()
