"""(being built)"""

from __future__ import annotations

import argparse


def cmd_verify_chain(args: argparse.Namespace) -> int:
    raise SystemExit("not built yet")


def cmd_verify_chain_remote(args: argparse.Namespace) -> int:
    raise SystemExit("not built yet")
