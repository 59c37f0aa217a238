"""The wire form of events and answers, built and spliced as bytes.

Every stored event keeps the protobuf bytes of its ``leadtrail.v1.Event`` and
the changes of its timeline step, so that a read answers by splicing stored
bytes instead of building messages field by field. These functions make and
splice those bytes; each writes protobuf's canonical encoding, equal to what
``SerializeToString()`` gives for the same content.

Two twins implement them byte for byte alike: the compiled ``_wireform`` (C,
built by ``pip install`` where a compiler exists) and the plain-Python
``_wireform_py``. The compiled one is used when it imports, unless the
environment sets ``LEADTRAIL_PURE=1``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .twins import chosen

_twin = chosen(f"{__package__}._wireform", f"{__package__}._wireform_py")

COMPILED: bool = _twin.__name__.endswith("._wireform")
"""Whether the compiled twin is in use."""
PREFIX_COMPILED: bool = COMPILED and hasattr(_twin, "prefix_compress")
"""Whether bodies are compressed against their base in C: the compiled twin loads libzstd
at import, and without it the pure twin's functions (python-zstandard) are used."""
CHAIN_COMPILED: bool = COMPILED and hasattr(_twin, "chain_block")
"""Whether a new event's chain block is made in C: the compiled twin finds OpenSSL's SHA-256 at
import, and without it the pure twin's function (hashlib) is used."""
IMPLEMENTATION: str = "compiled" if COMPILED else "pure"
"""Which twin is in use, as reports and benchmarks name it: ``compiled`` or ``pure``."""

if TYPE_CHECKING:  # both twins have these signatures (``_wireform.pyi`` states the compiled one's)
    from ._wireform_py import (
        chain_block,
        encode_event,
        field_changes,
        prefix_compress,
        prefix_decompress,
        repeated_field,
        splice_event,
        struct_bytes,
        timeline_bytes,
        value_bytes,
    )
else:
    encode_event = _twin.encode_event
    splice_event = _twin.splice_event
    value_bytes = _twin.value_bytes
    field_changes = _twin.field_changes
    struct_bytes = _twin.struct_bytes
    timeline_bytes = _twin.timeline_bytes
    repeated_field = _twin.repeated_field
    if CHAIN_COMPILED:
        chain_block = _twin.chain_block
    else:
        from ._wireform_py import chain_block
    if PREFIX_COMPILED:
        prefix_compress = _twin.prefix_compress
        prefix_decompress = _twin.prefix_decompress
    else:
        from ._wireform_py import prefix_compress, prefix_decompress

__all__ = [
    "CHAIN_COMPILED",
    "COMPILED",
    "IMPLEMENTATION",
    "PREFIX_COMPILED",
    "chain_block",
    "encode_event",
    "field_changes",
    "prefix_compress",
    "prefix_decompress",
    "repeated_field",
    "splice_event",
    "struct_bytes",
    "timeline_bytes",
    "value_bytes",
]
