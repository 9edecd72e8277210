"""OTLP/HTTP trace receiver standing in for Jaeger in the deployment test.

    python otlp_receiver.py HOST PORT READY_FILE

Decodes each `POST /v1/traces` body as an ExportTraceServiceRequest
(opentelemetry-proto); a body that does not decode is answered 400 and
counted as bad. `GET /spans` returns what was received as JSON:
{"spans": [{"instance": ..., "service": ..., "name": ...}], "bad_posts": N}.
Writes READY_FILE once it listens.
"""

import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

lock = threading.Lock()
spans = []
bad_posts = 0


def attribute(attrs, key):
    for kv in attrs:
        if kv.key == key:
            return kv.value.string_value
    return ""


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        global bad_posts
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path != "/v1/traces":
            self.send_error(404)
            return
        request = ExportTraceServiceRequest()
        try:
            request.ParseFromString(body)
        except Exception:
            request = None
        got = []
        if request is not None:
            for rs in request.resource_spans:
                attrs = rs.resource.attributes
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        got.append(
                            {
                                "instance": attribute(attrs, "service.instance.id"),
                                "service": attribute(attrs, "service.name"),
                                "name": span.name,
                            }
                        )
        with lock:
            if not got:
                bad_posts += 1
            spans.extend(got)
        if not got:
            self.send_error(400, "not a non-empty ExportTraceServiceRequest")
            return
        reply = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def do_GET(self):
        if self.path != "/spans":
            self.send_error(404)
            return
        with lock:
            body = json.dumps({"spans": spans, "bad_posts": bad_posts}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def main():
    host, port, ready = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    server = ThreadingHTTPServer((host, port), Handler)
    with open(ready + ".tmp", "w") as f:
        f.write(f"{host}:{server.server_address[1]}\n")
    os.rename(ready + ".tmp", ready)
    server.serve_forever()


if __name__ == "__main__":
    main()
