"""A webhook receiver for the alert tests: a real HTTP server on 127.0.0.1 in a thread.

`answers` scripts its replies, one per request (the last one repeats): an HTTP status, "hang"
(accept the request and answer nothing until the receiver stops), or "trickle" (send the
answer's status line a byte every 0.1 s for about 3 s, so that no single read waits long).
"""

import contextlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver:
    """What the receiver got: each request's path and JSON body, in order."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.requests: list[dict] = []
        self.released = threading.Event()
        self.lock = threading.Lock()
        self.url = ""

    @property
    def bodies(self) -> list[dict]:
        return [request["body"] for request in self.requests]

    def next_answer(self):
        with self.lock:
            index = min(len(self.requests) - 1, len(self.answers) - 1)
            return self.answers[index]


def _handler(receiver: Receiver):
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            length = int(self.headers.get("Content-Length", 0))
            raw = self.rfile.read(length)
            with receiver.lock:
                receiver.requests.append(
                    {
                        "path": self.path,
                        "body": json.loads(raw or b"null"),
                        "headers": dict(self.headers),
                    }
                )
            answer = receiver.next_answer()
            if answer == "hang":
                receiver.released.wait(30)
                return
            if answer == "trickle":
                for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"[:30]:
                    if receiver.released.wait(0.1):
                        return
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                return
            self.send_response(answer)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"ok" if answer < 300 else b"refused")

        def log_message(self, format, *args):  # keep the test output quiet
            pass

    return Handler


@contextlib.contextmanager
def receiver(answers=(200,), path: str = "/hook"):
    """A running receiver; yields it with `.url` set; stopped on exit."""
    state = Receiver(answers)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}{path}"
    try:
        yield state
    finally:
        state.released.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
