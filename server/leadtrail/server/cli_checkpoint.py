"""(being built)"""

from __future__ import annotations

import argparse


def cmd_checkpoint(args: argparse.Namespace) -> int:
    raise SystemExit("not built yet")


def cmd_keys_public(args: argparse.Namespace) -> int:
    raise SystemExit("not built yet")
