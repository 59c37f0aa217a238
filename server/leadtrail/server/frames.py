"""The bytes of the batched forwarding stream between a follower worker and the writer.

A follower sends the calls it forwards (forwarding.py) in frames, each the
concatenation of items; the writer (frame_admission.py) answers each item, by its
tag, in frames of answers. A frame is whatever piled up while the previous one
was being written, so a busy follower sends many calls per write.

    item   = tag u64, timeout f64 (NaN: none), method (u8 length, ASCII),
             metadata, request (u32 length, bytes)
    answer = tag u64, code u8 (0: OK), body (u32 length: the response, or the
             error's details in UTF-8), metadata (the error's trailing metadata)
    metadata = count u16, then per entry: key (u16 length, ASCII),
               kind u8 (0: str, 1: bytes), value (u32 length)

Little-endian. The stream never leaves the machine (the writer's private Unix socket).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

Metadata = tuple[tuple[str, str | bytes], ...]

_ITEM_HEAD = struct.Struct("<QdB")
_ANSWER_HEAD = struct.Struct("<QBI")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_ENTRY_HEAD = struct.Struct("<HB")


class FrameError(ValueError):
    """A frame that does not follow the grammar above."""


@dataclass(frozen=True)
class Item:
    tag: int
    method: str
    metadata: Metadata
    request: bytes
    timeout: float | None


@dataclass(frozen=True)
class Answer:
    tag: int
    code: int
    """A ``grpc.StatusCode`` value's number; 0 is OK."""
    body: bytes
    metadata: Metadata = ()

    @property
    def details(self) -> str:
        return self.body.decode("utf-8", errors="replace")


def _metadata_bytes(metadata: Sequence[tuple[str, Any]]) -> bytes:
    parts = [_U16.pack(len(metadata))]
    for key, value in metadata:
        name = key.encode("ascii")
        binary = isinstance(value, bytes)
        data = value if binary else str(value).encode("utf-8")
        parts += (_ENTRY_HEAD.pack(len(name), binary), name, _U32.pack(len(data)), data)
    return b"".join(parts)


def item_bytes(
    tag: int, method: str, metadata: Sequence[tuple[str, Any]], request: bytes, timeout: float | None
) -> bytes:
    name = method.encode("ascii")
    head = _ITEM_HEAD.pack(tag, math.nan if timeout is None else timeout, len(name))
    return b"".join((head, name, _metadata_bytes(metadata), _U32.pack(len(request)), request))


def answer_bytes(answer: Answer) -> bytes:
    head = _ANSWER_HEAD.pack(answer.tag, answer.code, len(answer.body))
    return b"".join((head, answer.body, _metadata_bytes(answer.metadata)))


class _Reader:
    def __init__(self, frame: bytes) -> None:
        self.view = memoryview(frame)
        self.at = 0

    def more(self) -> bool:
        return self.at < len(self.view)

    def take(self, size: int) -> bytes:
        end = self.at + size
        if end > len(self.view):
            raise FrameError(f"frame cut short at byte {self.at} (wanted {size} more)")
        chunk = self.view[self.at : end].tobytes()
        self.at = end
        return chunk

    def unpack(self, shape: struct.Struct) -> tuple[Any, ...]:
        if self.at + shape.size > len(self.view):
            raise FrameError(f"frame cut short at byte {self.at}")
        values = shape.unpack_from(self.view, self.at)
        self.at += shape.size
        return values

    def metadata(self) -> Metadata:
        (count,) = self.unpack(_U16)
        entries: list[tuple[str, str | bytes]] = []
        for _ in range(count):
            size, binary = self.unpack(_ENTRY_HEAD)
            key = self.take(size).decode("ascii")
            (length,) = self.unpack(_U32)
            value = self.take(length)
            entries.append((key, value if binary else value.decode("utf-8")))
        return tuple(entries)


def items(frame: bytes) -> Iterator[Item]:
    reader = _Reader(frame)
    while reader.more():
        tag, timeout, size = reader.unpack(_ITEM_HEAD)
        method = reader.take(size).decode("ascii")
        metadata = reader.metadata()
        (length,) = reader.unpack(_U32)
        request = reader.take(length)
        yield Item(tag, method, metadata, request, None if math.isnan(timeout) else timeout)


def answers(frame: bytes) -> Iterator[Answer]:
    reader = _Reader(frame)
    while reader.more():
        tag, code, length = reader.unpack(_ANSWER_HEAD)
        body = reader.take(length)
        yield Answer(tag, code, body, reader.metadata())
