"""An HTTPS server on loopback for tests: given paths answer with given responses, every request is recorded.

It runs in its own threads, so it serves whatever event loop (or none) the test uses. Each
connection's TLS handshake happens in that connection's thread, so a client that gives up
mid-handshake (an untrusted certificate, say) never holds up the others.

    server = HttpsServer(authority, "mta-sts.example.org", {"/.well-known/mta-sts.txt": Response(b"...")},
                         host=ip, port=443).start()
    ...
    server.requests  # [Request(method="GET", path=..., headers={...}, body=b"", sni="mta-sts.example.org")]

`routes` may be changed while the server runs; a path not in it gets 404. A `Response` can be
a redirect (`headers={"Location": ...}`), carry any status and content type, come late
(`delay`), never come at all (`stall`), or stream a body without a Content-Length from an
iterable of chunks (an endless generator makes a server that never stops sending).
"""

from __future__ import annotations

import http.server
import socket
import ssl
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass
class Response:
    body: bytes | Iterable[bytes] = b""
    status: int = 200
    content_type: str = "text/plain"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0    # seconds before the status line
    stall: bool = False   # accept the request, then say nothing until the server stops


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]  # names lowercased
    body: bytes
    sni: str | None


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # quiet: pytest shows what matters
        pass

    def _serve(self) -> None:
        body = self._read_body()
        self.server.owner._record(Request(self.command, self.path,
                                          {name.lower(): value for name, value in self.headers.items()},
                                          body, getattr(self.connection, "sni", None)))
        response = self.server.owner.routes.get(self.path.split("?", 1)[0])
        if response is None:
            response = Response(b"not found\n", status=404)
        if response.stall:
            self.server.owner._stopped.wait()
            self.close_connection = True
            return
        if response.delay:
            time.sleep(response.delay)
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        for name, value in response.headers.items():
            self.send_header(name, value)
        if isinstance(response.body, (bytes, bytearray)):
            self.send_header("Content-Length", str(len(response.body)))
            self.end_headers()
            self.wfile.write(response.body)
            return
        self.send_header("Connection", "close")  # the body ends when the connection does
        self.close_connection = True
        self.end_headers()
        try:
            for chunk in response.body:
                if self.server.owner._stopped.is_set():
                    return
                self.wfile.write(chunk)
        except OSError:  # the client stopped reading: what a careful client does
            return

    do_GET = do_POST = do_PUT = do_HEAD = _serve

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    owner: HttpsServer

    def finish_request(self, request, client_address):
        request.settimeout(10)
        try:
            connection = self.owner.context.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError) as error:
            self.owner.handshake_errors.append(error)
            return
        connection.sni = self.owner._sni_names.pop(threading.get_ident(), None)
        self.RequestHandlerClass(connection, client_address, self)

    def handle_error(self, request, client_address):  # a client that goes away is no test failure
        pass


class HttpsServer:
    """HTTPS on `host`:`port` (0: a free port) with a certificate for `hostname` from `authority`.

    Pass `context` instead for a server certificate made some other way (self-signed, another authority);
    the server sets its `sni_callback` to record the name each client asked for.
    """

    def __init__(self, authority=None, hostname: str = "localhost", routes: dict[str, Response] | None = None,
                 host: str = "127.0.0.1", port: int = 0, context: ssl.SSLContext | None = None):
        if context is None:
            context = authority.server_context(hostname)
        context.sni_callback = self._sni
        self.context = context
        self.routes: dict[str, Response] = dict(routes or {})
        self.requests: list[Request] = []
        self.handshake_errors: list[BaseException] = []
        self._sni_names: dict[int, str | None] = {}
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._server = _Server((host, port), _Handler, bind_and_activate=False)
        self._server.owner = self
        self._server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.server_bind()
        self._server.server_activate()
        self.host, self.port = self._server.server_address[:2]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    def _sni(self, ssl_object, name, context) -> None:
        self._sni_names[threading.get_ident()] = name

    def _record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    def start(self) -> HttpsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> HttpsServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
