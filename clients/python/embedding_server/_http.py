"""A small HTTP/1.1 connection: keep-alive, pipelining, scatter-gather sends.

The standard library's http.client cannot pipeline (it refuses to send a
request before the previous answer has been read) and parses headers with the
email package, which costs more than the service takes to answer a lookup.
This one does just what the embedding server's API needs: requests with a
Content-Length body, answers framed by Content-Length or chunked encoding, and
answers read in the order the requests were sent.
"""

import select
import socket
import ssl
import urllib.parse


class ConnectionClosed(ConnectionError):
    """The server closed the connection before (all of) an answer arrived."""


class Response:
    __slots__ = ("status", "headers", "body")

    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # lower-case names -> values
        self.body = body  # a bytearray


_NO_BODY_STATUSES = (204, 304)


class Connection:
    """One keep-alive connection to one server. Not thread-safe."""

    def __init__(self, url, timeout=60.0):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"url must be http:// or https://, not {url!r}")
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.tls = parts.scheme == "https"
        self.prefix = parts.path.rstrip("/")
        self.timeout = timeout
        netloc = self.host if ":" not in self.host else f"[{self.host}]"
        if parts.port:
            netloc += f":{parts.port}"
        self._host_header = netloc
        self._sock = None
        self._buf = bytearray()
        self._used = False  # an answer was read on this socket (keep-alive reuse)

    # ---- socket ----

    def _connect(self):
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls:
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=self.host)
        self._sock = sock
        self._buf = bytearray()
        self._used = False

    def close(self):
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None
                self._buf = bytearray()

    def _dropped(self):
        """True when an idle kept-alive socket was closed by the server (it is
        readable: EOF, or bytes nobody asked for)."""
        if self._sock is None:
            return True
        if self._buf:
            return True
        try:
            readable, _, _ = select.select([self._sock], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)

    def ready(self, idle):
        """Makes sure there is a socket to send on. idle: no answer is still
        owed on this connection, so a socket the server closed meanwhile can
        be replaced safely."""
        if self._sock is None:
            self._connect()
        elif idle and self._used and self._dropped():
            self.close()
            self._connect()

    @property
    def fresh(self):
        """No answer has been read on this socket yet."""
        return not self._used

    # ---- requests ----

    def send(self, method, path, headers, parts):
        """Sends one request. headers: (name, value) pairs; parts: bytes-like
        objects that together are the body (sent without joining them)."""
        length = sum(memoryview(p).nbytes for p in parts)
        lines = [f"{method} {self.prefix}{path} HTTP/1.1", f"Host: {self._host_header}"]
        lines.extend(f"{k}: {v}" for k, v in headers)
        if length or method in ("POST", "PUT"):
            lines.append(f"Content-Length: {length}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self._send_all([head, *parts])

    def _send_all(self, parts):
        views = [memoryview(p).cast("B") for p in parts if memoryview(p).nbytes]
        sock = self._sock
        if self.tls or not hasattr(sock, "sendmsg"):
            for v in views:
                sock.sendall(v)
            return
        while views:
            sent = sock.sendmsg(views)
            while views and sent >= views[0].nbytes:
                sent -= views[0].nbytes
                views.pop(0)
            if sent:
                views[0] = views[0][sent:]

    # ---- answers ----

    def _fill(self):
        if self._sock is None:
            raise ConnectionClosed("the connection was closed after an earlier answer")
        chunk = self._sock.recv(262144)
        if not chunk:
            raise ConnectionClosed("the server closed the connection")
        self._buf += chunk

    def _read_head(self):
        while True:
            end = self._buf.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(self._buf) > 65536:
                raise ConnectionError("answer headers longer than 64 KiB")
            self._fill()
        head = bytes(self._buf[:end]).decode("latin-1")
        del self._buf[: end + 4]
        lines = head.split("\r\n")
        status_line = lines[0].split(" ", 2)
        if len(status_line) < 2 or not status_line[0].startswith("HTTP/1."):
            raise ConnectionError(f"not an HTTP answer: {lines[0][:80]!r}")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            value = value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        return int(status_line[1]), headers, status_line[0]

    def _read_exact(self, n):
        """n bytes of body: what is buffered, then straight into the result."""
        out = bytearray(n)
        have = min(n, len(self._buf))
        out[:have] = self._buf[:have]
        del self._buf[:have]
        view = memoryview(out)
        while have < n:
            if self._sock is None:
                raise ConnectionClosed("the connection was closed after an earlier answer")
            got = self._sock.recv_into(view[have:], n - have)
            if not got:
                raise ConnectionClosed("the server closed the connection mid-answer")
            have += got
        return out

    def _read_line(self):
        while True:
            end = self._buf.find(b"\r\n")
            if end >= 0:
                line = bytes(self._buf[:end])
                del self._buf[: end + 2]
                return line
            self._fill()

    def _read_chunked(self):
        body = bytearray()
        while True:
            size = int(self._read_line().split(b";", 1)[0].strip(), 16)
            if size == 0:
                while self._read_line():  # trailers, up to the empty line
                    pass
                return body
            body += self._read_exact(size)
            self._read_line()

    def read(self, method="POST"):
        """Reads the next answer (the oldest request not answered yet)."""
        status, headers, version = self._read_head()
        while 100 <= status < 200:  # interim answers carry no body
            status, headers, version = self._read_head()
        if method == "HEAD" or status in _NO_BODY_STATUSES:
            body = bytearray()
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            body = self._read_chunked()
        elif "content-length" in headers:
            body = self._read_exact(int(headers["content-length"]))
        else:  # framed by the end of the connection
            body = bytearray(self._buf)
            self._buf = bytearray()
            while True:
                chunk = self._sock.recv(262144)
                if not chunk:
                    break
                body += chunk
            headers["connection"] = "close"
        self._used = True
        conn = headers.get("connection", "").lower()
        if "close" in conn or (version == "HTTP/1.0" and "keep-alive" not in conn):
            self.close()
        return Response(status, headers, body)
