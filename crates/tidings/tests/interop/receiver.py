"""A webhook receiver that verifies Tidings deliveries the way real receivers do.

Used by tests/it/interop.rs. Run it as

    python receiver.py CONFIG_PATH

It binds 127.0.0.1 on a free port and prints `{"port": N}` as its first stdout line. For every POST it
reads CONFIG_PATH (JSON, re-read on each request so the test can add routes after creating its
webhooks):

    {"routes": {"/std": {"scheme": "standard", "secret": "whsec_..."},
                "/hmac": {"scheme": "hmac-sha256", "secret": "...", "header": "x-signature"}}}

and verifies the request:

- `standard`: with the official `standardwebhooks` package (`Webhook(secret).verify(body, headers)`);
- `hmac-sha256`: with Python's own recipe, `hmac.compare_digest("sha256=" + hex HMAC-SHA256 of the raw
  body keyed with the UTF-8 secret, header)`.

It answers 200 when the signature is valid and 400 otherwise (404 for a path with no route), and prints
one JSON line per request on stdout: {"path", "valid", "error", "id"}.
"""

import hashlib
import hmac
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

try:  # standardwebhooks 1.x
    from standardwebhooks.webhooks import Webhook
except ImportError:  # pragma: no cover - older layouts export it from the package root only
    from standardwebhooks import Webhook

CONFIG_PATH = sys.argv[1]
OUTPUT = threading.Lock()


def load_routes():
    with open(CONFIG_PATH, encoding="utf-8") as config:
        return json.load(config).get("routes", {})


def verify(route, body, headers):
    """Returns None when the request is valid, else why not."""
    scheme = route["scheme"]
    secret = route["secret"]
    if scheme == "standard":
        try:
            Webhook(secret).verify(body, headers)
        except Exception as error:  # WebhookVerificationError, or a malformed header
            return f"{type(error).__name__}: {error}"
        return None
    if scheme == "hmac-sha256":
        header = headers.get(route.get("header", "x-tidings-signature").lower(), "")
        expected = "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
        if hmac.compare_digest(expected, header):
            return None
        return f"signature mismatch: got {header!r}"
    return f"unknown scheme {scheme!r}"


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(length)
        headers = {name.lower(): value for name, value in self.headers.items()}
        try:
            route = load_routes().get(self.path)
            if route is None:
                status, error = 404, f"no route for {self.path}"
            else:
                error = verify(route, body, headers)
                status = 200 if error is None else 400
        except Exception as failure:  # a broken config must show up in the test, not hang it
            status, error = 500, f"{type(failure).__name__}: {failure}"
        line = {
            "path": self.path,
            "valid": error is None,
            "error": error,
            "id": headers.get("webhook-id") or headers.get("x-request-id"),
        }
        with OUTPUT:
            print(json.dumps(line), flush=True)
        reply = b"ok" if error is None else error.encode("utf-8")
        self.send_response(status)
        self.send_header("content-type", "text/plain; charset=utf-8")
        self.send_header("content-length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format, *args):  # keep stderr quiet; stdout carries the results
        pass


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(json.dumps({"port": server.server_address[1]}), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
