# The compiled twin (_wireform.c): the same functions as _wireform_py, byte for byte.
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ._wireform_py import Blob

def encode_event(
    id: str,
    type: str,
    timestamp_ms: int,
    lead_id: str,
    flow_id: str,
    entity_id: str,
    outcome: int,
    reason: str,
    duration_ms: int,
    integration: str,
    response_code: int,
    price: str,
    details_json: Blob,
    lead_json: Blob,
) -> tuple[bytes, int]: ...
def splice_event(
    event_pb: Blob, head_len: int, recorded_at_ms: int, position: int, account_id: Blob
) -> bytes: ...
def value_bytes(value: Any) -> bytes: ...
def struct_bytes(obj: Mapping[str, Any]) -> bytes: ...
def field_changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> bytes: ...
def timeline_bytes(
    lead_id: str,
    steps: Iterable[Sequence[Any]],
    total_ms: int,
    next_page_token: str,
    audit: Iterable[Blob],
) -> bytes: ...
def repeated_field(field_number: int, messages: Iterable[Blob]) -> bytes: ...

# Present only when libzstd.so.1 could be loaded at import (wireform falls back to the pure twin's).
def prefix_compress(body: Blob, base: Blob, level: int) -> bytes: ...
def prefix_decompress(frame: Blob, base: Blob, max_size: int) -> bytes: ...

# Present only when OpenSSL's libcrypto was found at import (wireform.CHAIN_COMPILED).
def chain_block(
    prev: Blob,
    salt: Blob,
    position: int,
    recorded_at_ms: int,
    timestamp_ms: int,
    account_id: str,
    event_id: str,
    event_type: str,
    lead_id: str,
    flow_id: str,
    entity_id: str,
    outcome: int,
    duration_ms: int,
    integration: str,
    response_code: int,
    price: str,
    reason: str,
    details_json: Blob,
    lead_json: Blob,
) -> tuple[bytes, bytes]: ...
