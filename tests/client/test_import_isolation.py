"""The SDK works on a host with only grpcio and protobuf installed."""

from __future__ import annotations

import subprocess
import sys
import textwrap

BLOCKED = ["lmdb", "zstandard", "orjson", "crc32c", "leadtrail.storage", "leadtrail.server"]


def test_client_imports_and_builds_events_without_storage_or_server_dependencies() -> None:
    script = textwrap.dedent(
        f"""
        import sys
        from importlib.abc import MetaPathFinder

        BLOCKED = {BLOCKED!r}

        class Refuse(MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if any(name == b or name.startswith(b + ".") for b in BLOCKED):
                    raise ImportError(f"{{name}} is not installed here")
                return None

        for name in BLOCKED:
            sys.modules.pop(name, None)
        sys.meta_path.insert(0, Refuse())

        try:
            import orjson  # installed in the dev environment: the finder must hide it
        except ImportError:
            pass
        else:
            raise AssertionError("the finder did not block orjson")

        from decimal import Decimal
        import leadtrail.client as sdk
        from leadtrail.client._convert import event_to_proto

        event = sdk.Event("source.submitted", "lead-1", "flow-1", price=Decimal("1.50"),
                          lead={{"email": "a@example.com"}})
        assert event_to_proto(event).price == "1.50"
        assert sdk.new_event_id().startswith("evt_")
        loaded = sorted(n for n in sys.modules if any(n == b or n.startswith(b + ".") for b in BLOCKED))
        assert not loaded, loaded
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
