"""``leadtrail checkpoint`` (a running server's signed chain hash, as JSON) and ``leadtrail
keys public`` (the store's public key, read from its data directory).

The JSON is ``SignedCheckpoint`` in protobuf's JSON mapping with the proto field names
(bytes in base64): the FILE ``leadtrail verify --chain --checkpoint FILE`` reads, and what
an auditor keeps. Both commands check what they print: a checkpoint whose signature does
not hold is never written out.
"""

from __future__ import annotations

import argparse
import base64
import os

from google.protobuf import json_format

from leadtrail.storage import verify_checkpoint
from leadtrail.storage.fs import OS_FILES
from leadtrail.storage.signing import KEY_FILE, load_signer
from leadtrail.v1 import admin_pb2

from .cli_errors import CommandError
from .convert import ms_to_timestamp


def cmd_checkpoint(args: argparse.Namespace) -> int:
    # The SDK only here: ``keys public`` works on a host without the gRPC stack.
    from .cli_remote import connect

    with connect(args) as client:
        checkpoint = client.checkpoint(args.position)
    message = admin_pb2.SignedCheckpoint(
        position=checkpoint.position,
        chain_hash=checkpoint.chain_hash,
        signature=checkpoint.signature,
        public_key=checkpoint.public_key,
    )
    ms_to_timestamp(checkpoint.recorded_at_ms, message.recorded_at)
    signed = (checkpoint.position, checkpoint.chain_hash, checkpoint.recorded_at_ms, checkpoint.signature)
    if not verify_checkpoint(checkpoint.public_key, *signed):
        raise CommandError(
            f"server {args.server} answered a checkpoint at position {checkpoint.position} "
            "whose signature does not hold under the public key it names"
        )
    print(json_format.MessageToJson(message, preserving_proto_field_name=True))
    return 0


def cmd_keys_public(args: argparse.Namespace) -> int:
    if not os.path.isdir(os.path.join(args.data, "log")):
        raise CommandError(f"no LeadTrail store at {args.data} (no log/ directory)")
    # Read, never made here: the server's first start makes the key (and a running server
    # holds the store's lock, which this needs not).
    signer = load_signer(args.data, OS_FILES, create=False)
    if signer is None:
        raise CommandError(
            f"the store at {args.data} has no signing key yet ({KEY_FILE}): "
            "the server makes it when it first starts"
        )
    print(base64.b64encode(signer.public_key).decode())
    return 0
