"""The server's own checkpoint records (every 0.2 s here) among an account's events: they take
positions of the global log, are signed and chained, and no answer of the account shows one:
queries, exports, subscriptions, files sinks and alert rules see only the account's events."""

from __future__ import annotations

import json
import time
from pathlib import Path

from leadtrail.client import Client, Event, EventFilter, FilesTarget, Sink

from .conftest import ServerProcess


def test_checkpoint_records_are_chained_and_never_in_an_accounts_answers(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", "--checkpoint-interval", "0.2").start()
    try:
        with Client(server.address) as client:
            client.set_sink(Sink("everything", FilesTarget("out", "jsonl", rotate_events=1)))
            rule = client.set_alert_rule("any-audit", kind="match", filter=EventFilter("audit.*"))
            assert rule.name == "any-audit"
            subscription = client.subscribe(from_start=True)
            results = []
            deadline = time.monotonic() + 30
            while True:
                results += client.append(
                    [Event(type="source.submitted", lead_id=f"lead-{len(results)}", flow_id="f")]
                )
                positions = [r.position for r in results]
                if positions[-1] - positions[0] + 1 > len(positions) + 2 or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            # Positions between the account's events went to checkpoint records.
            assert positions[-1] - positions[0] + 1 >= len(positions) + 3, positions
            ours = [e.position for e in client.query()]
            assert ours == positions
            exported = b"".join(client.export()).decode().splitlines()  # JSON lines
            assert [json.loads(line)["position"] for line in exported] == positions
            seen = []
            for item in subscription:
                if not isinstance(item, Event):
                    continue  # caught up, heartbeats
                seen.append(item.position)
                if len(seen) == len(positions):
                    break
            subscription.stop()
            assert seen == positions
            for result in results:
                assert client.verify_receipt(result.position, result.chain_hash)
            report = client.verify_chain()
            assert report.problems == [] and report.signatures_checked >= 3
            assert report.chain_checked >= positions[-1]

            def sunk() -> list[int]:
                files = sorted((server.data / "sink-files" / "default" / "out").rglob("*.jsonl"))
                return sorted(
                    json.loads(line)["position"] for f in files for line in f.read_text().splitlines()
                )

            deadline = time.monotonic() + 30
            while sunk() != positions and time.monotonic() < deadline:
                time.sleep(0.1)
            assert sunk() == positions
            assert client.list_alerts() == []
    finally:
        assert server.stop() == 0
