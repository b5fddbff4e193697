"""A webhook receiver for earshot's tests (tests/webhooks.rs): verifies every request with the
Standard Webhooks reference library and appends one JSON line per request to --out:
{"id", "type", "verified", "answered", "error"}.

  --fail-first N   answer 500 to the first N attempts of each webhook-id, then 200
  --status CODE    always answer CODE (e.g. 410, or 302 with --location)
"""

import argparse
import ssl
import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--secret", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--fail-first", type=int, default=0)
    p.add_argument("--status", type=int, default=0)
    p.add_argument("--location", default="")
    p.add_argument("--tls-cert", default="", help="serve https with this PEM certificate")
    p.add_argument("--tls-key", default="", help="... and this PEM key")
    args = p.parse_args()
    hook = Webhook(args.secret)
    seen = Counter()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            headers = {k: v for k, v in self.headers.items()}
            msg_id = self.headers.get("webhook-id", "")
            record = {"id": msg_id, "type": None, "verified": False, "error": None}
            try:
                payload = hook.verify(body, headers)
                record["verified"] = True
                record["type"] = payload.get("type")
                record["payload"] = payload
            except Exception as e:  # noqa: BLE001 - any failure is recorded
                record["error"] = repr(e)
            with lock:
                seen[msg_id] += 1
                n = seen[msg_id]
            if args.status:
                status = args.status
            elif not record["verified"]:
                status = 400
            elif n <= args.fail_first:
                status = 500
            else:
                status = 200
            record["answered"] = status
            record["content_type"] = self.headers.get("content-type")
            with lock:
                with open(args.out, "a") as f:
                    f.write(json.dumps(record) + "\n")
            self.send_response(status)
            if args.location:
                self.send_header("Location", args.location)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    if args.tls_cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print("listening", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
