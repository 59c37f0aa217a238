"""``python -m benchmarks compare [--quick] [--runs N] [--only SYSTEMS] [--out DIR]``."""

from __future__ import annotations

import sys
from collections.abc import Sequence

USAGE = """usage: python -m benchmarks compare [--quick] [--runs N] [--only SYSTEMS] [--out DIR]

commands:
  compare   LeadTrail side by side with PostgreSQL, Redis Streams and NATS JetStream, the gRPC
            ceilings and LeadTrail with --workers 2, ending with the issue's targets
            (python -m benchmarks compare --help for its options)

The engine, service and client benchmarks run as scripts: python benchmarks/storage_bench.py,
python benchmarks/service_bench.py, python benchmarks/appender_bench.py,
python benchmarks/client_decode_bench.py."""


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command == "compare":
        # Imported here so that `--help` works before the harness's imports are satisfied.
        from benchmarks.compare import main as compare

        return compare(rest)
    print(f"python -m benchmarks: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
