"""A stand-in for an XProtect service's TLS port, run as its own process by the end-to-end
tests: it serves `fullchain.pem` + `key.pem` from a directory and reloads them on SIGHUP,
the way a real service picks up a new certificate when its reload command runs.

    python -m tests.tls_service DIR PORT PIDFILE
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import sys
import threading
from pathlib import Path
from types import FrameType


def load(directory: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(directory / "fullchain.pem", directory / "key.pem")
    return context


def main() -> None:
    directory, port, pidfile = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
    state = {"context": load(directory)}

    def reload(_signum: int, _frame: FrameType | None) -> None:
        state["context"] = load(directory)

    signal.signal(signal.SIGHUP, reload)
    listener = socket.create_server(("127.0.0.1", port))
    pidfile.write_text(str(os.getpid()))

    def serve(conn: socket.socket) -> None:
        try:
            conn.settimeout(5)
            with state["context"].wrap_socket(conn, server_side=True) as tls:
                tls.sendall(b"certfleet\n")
        except (ssl.SSLError, OSError):
            conn.close()

    while True:
        try:
            conn, _ = listener.accept()
        except InterruptedError:
            continue
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
