"""An OTLP/HTTP sink for the benchmarks: a collector that answers at once and keeps nothing but
the bodies (a separate process, so that it shares nothing with the gateway but the CPUs).

    python bench/_otlp_sink.py --port P

`POST /v1/traces` keeps the body and answers 200 with an empty `ExportTraceServiceResponse`
(zero bytes of protobuf); `GET /stats` decodes what was kept and says how many export requests
and spans arrived since the last `/stats` (decoded only then, not while the benchmark runs, and
forgotten); `GET /readyz` answers 200.
Runs as the other bench servers do: uvicorn, uvloop, httptools, warnings only.
"""

from __future__ import annotations

import argparse

import msgspec
import uvicorn
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from starlette.types import Receive, Scope, Send

_PROTOBUF = [(b"content-type", b"application/x-protobuf"), (b"content-length", b"0")]
_JSON = [(b"content-type", b"application/json")]


class OtlpSink:
    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["method"] == "POST" and scope["path"] == "/v1/traces":
            chunks = []
            while True:
                message = await receive()
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    break
            self.bodies.append(b"".join(chunks))
            await send({"type": "http.response.start", "status": 200, "headers": _PROTOBUF})
            await send({"type": "http.response.body", "body": b""})
            return
        if scope["path"] == "/stats":
            body = msgspec.json.encode({"requests": len(self.bodies), "spans": self.spans()})
            self.bodies = []
        elif scope["path"] == "/readyz":
            body = b'{"status":"ready"}'
        else:
            await send({"type": "http.response.start", "status": 404, "headers": _JSON})
            await send({"type": "http.response.body", "body": b"{}"})
            return
        await send({"type": "http.response.start", "status": 200, "headers": _JSON})
        await send({"type": "http.response.body", "body": body})

    def spans(self) -> int:
        count = 0
        for body in self.bodies:
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            for resource in request.resource_spans:
                for scope in resource.scope_spans:
                    count += len(scope.spans)
        return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        OtlpSink(),
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
