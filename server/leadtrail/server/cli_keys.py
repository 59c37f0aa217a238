"""``leadtrail keys``: the API keys of a data directory, managed offline (beside a
running server too: it rereads the key file when it changes)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import UTC, datetime

from .cli_errors import CommandError
from .cli_output import iso_ms, table
from .keys import KeyStore, KeyStoreError


def _key_store(args: argparse.Namespace) -> KeyStore:
    if not os.path.isdir(args.data):
        raise CommandError(f"no data directory at {args.data} (create it, or start the server once)")
    return KeyStore(args.data)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _format_ms(ms: int) -> str:
    return iso_ms(datetime.fromtimestamp(ms / 1000, UTC))


def cmd_keys_create(args: argparse.Namespace) -> int:
    try:
        secret, key = _key_store(args).create(
            args.account, args.role, _now_ms(), args.entity or (), args.flow or (), args.rate_limit
        )
    except KeyStoreError as e:
        raise CommandError(str(e)) from None
    print(secret)  # alone on stdout, for `KEY=$(leadtrail keys create ...)`
    print(f"created {key.key_id}: account {key.account}, role {key.role}", file=sys.stderr)
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    try:
        keys = _key_store(args).list_keys(args.account)
    except KeyStoreError as e:
        raise CommandError(str(e)) from None
    header = ("KEY_ID", "ACCOUNT", "ROLE", "ENTITIES", "FLOWS", "RATE/S", "CREATED", "REVOKED")
    rows = [
        (
            k.key_id,
            k.account,
            k.role,
            ",".join(k.entities) or "*",
            ",".join(k.flows) or "*",
            str(k.rate_per_second or "-"),
            _format_ms(k.created_at_ms),
            _format_ms(k.revoked_at_ms) if k.revoked else "",
        )
        for k in keys
    ]
    print("\n".join(table(header, rows)))
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    try:
        key = _key_store(args).revoke(args.key_id, _now_ms())
    except KeyStoreError as e:
        raise CommandError(str(e)) from None
    print(f"revoked {key.key_id} (account {key.account}, role {key.role})", file=sys.stderr)
    return 0
