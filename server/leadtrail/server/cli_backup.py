"""(being built)"""

from __future__ import annotations

import argparse


def cmd_backup(args: argparse.Namespace) -> int:
    raise SystemExit("not built yet")


def cmd_restore(args: argparse.Namespace) -> int:
    raise SystemExit("not built yet")
