# The compiled twin (_ingest.c): the same functions as _ingest_py, the same answers.
from collections.abc import Callable, Sequence

from ._ingest_py import IndexRows, Placed
from .event import Event

IMPLEMENTATION: str

def plain_fields_ok(event: Event) -> bool: ...
def json_object_ok(value: object) -> bool: ...
def id_key(prefix: bytes, event_id: str) -> bytes: ...
def index_rows(
    located: Sequence[Placed], number: Callable[[bytes, str], bytes], lead_hash: Callable[[str], bytes]
) -> IndexRows: ...
