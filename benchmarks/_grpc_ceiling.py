"""An empty gRPC service: the most a Python grpc.aio server answers on this machine.

    python benchmarks/_grpc_ceiling.py --listen 127.0.0.1:0 [--timeline-answer FILE]

The service benchmark calls it exactly as it calls LeadTrail (same client, same
concurrency, same request bytes) so that every LeadTrail figure has a ceiling
measured in the same run: what is left between the two is the work of the
LeadTrail handlers, not the cost of Python gRPC or of the client. The server is
built the way ``leadtrail.server.app`` builds its own (grpc.aio, generic
handlers taking raw bytes, the same channel options), and prints the same kind
of ready line (``serving on HOST:PORT``).

Methods of ``leadtrail.bench.Ceiling``:

- ``Unary``: any request, an empty response at once;
- ``Echo``: a bidirectional stream answering every request with an empty
  message, in order (the shape of ``AppendStream``);
- ``Flood``: a request of an 8-byte big-endian count followed by a payload; the
  payload is sent back that many times (the shape of a subscription replay,
  with messages of the size the real one sends).

It also answers LeadTrail's own ``Append`` and ``GetTimeline`` (same service
and method names), so that the SDK's client itself can call it: the same
client object, requests and decoding of the answer as against LeadTrail.
``Append`` answers an empty ``AppendResponse``; ``GetTimeline`` an empty
``Timeline``, or, with ``--timeline-answer FILE``, the bytes of that file on
every call (a realistic answer built once: what transport and client decoding
cost alone, with no store behind it).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import grpc

SERVICE = "leadtrail.bench.Ceiling"
UNARY = f"/{SERVICE}/Unary"
ECHO = f"/{SERVICE}/Echo"
FLOOD = f"/{SERVICE}/Flood"
SUBMISSION = "leadtrail.v1.SubmissionService"
QUERY = "leadtrail.v1.QueryService"
"""LeadTrail's services, as ``leadtrail.v1`` names them (repeated so this file needs only grpcio)."""
MAX_MESSAGE_BYTES = 32 * 1024 * 1024
"""As ``leadtrail.server.app.DEFAULT_MAX_MESSAGE_BYTES``; repeated so this file needs only grpcio."""
SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.so_reuseport", 0),
]

Context = grpc.aio.ServicerContext[Any, Any]


async def unary(request: bytes, context: Context) -> bytes:
    return b""


async def echo(requests: AsyncIterator[bytes], context: Context) -> AsyncIterator[bytes]:
    async for _ in requests:
        yield b""


async def flood(request: bytes, context: Context) -> AsyncIterator[bytes]:
    count = int.from_bytes(request[:8], "big")
    payload = request[8:]
    for _ in range(count):
        yield payload


def flood_request(count: int, payload: bytes) -> bytes:
    return count.to_bytes(8, "big") + payload


def answering(answer: bytes) -> Callable[[bytes, Context], Awaitable[bytes]]:
    async def handler(request: bytes, context: Context) -> bytes:
        return answer

    return handler


def leadtrail_handlers(timeline_answer: bytes) -> list[grpc.GenericRpcHandler[Any, Any]]:
    """LeadTrail's Append and GetTimeline, answered at once (see the module's docstring)."""
    return [
        grpc.method_handlers_generic_handler(
            SUBMISSION, {"Append": grpc.unary_unary_rpc_method_handler(unary)}
        ),
        grpc.method_handlers_generic_handler(
            QUERY, {"GetTimeline": grpc.unary_unary_rpc_method_handler(answering(timeline_answer))}
        ),
    ]


async def serve(listen: str, timeline_answer: bytes = b"") -> None:
    server = grpc.aio.server(options=SERVER_OPTIONS)
    # No serializers: requests arrive and responses leave as bytes, as in
    # LeadTrail's handlers, which parse requests themselves.
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "Echo": grpc.stream_stream_rpc_method_handler(echo),
        "Flood": grpc.unary_stream_rpc_method_handler(flood),
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, handlers), *leadtrail_handlers(timeline_answer))
    )
    port = server.add_insecure_port(listen)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"ceiling: serving on {listen.rpartition(':')[0]}:{port}", flush=True)
    await stop.wait()
    await server.stop(0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument("--timeline-answer", help="file whose bytes GetTimeline answers (default: empty)")
    args = parser.parse_args(argv)
    answer = b""
    if args.timeline_answer:
        with open(args.timeline_answer, "rb") as file:
            answer = file.read()
    asyncio.run(serve(args.listen, answer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
