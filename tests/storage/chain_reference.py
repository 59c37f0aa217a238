"""An independent verifier of a store's hash chain, written from storage/FORMAT.md alone.

It imports nothing of the engine: it reads the segment files (record header, event
payload prefix, bare zstd frames with or without a dictionary, bodies compressed against
a base, the wire body and its chain block), computes each chained event's digest and the
chain as FORMAT.md's "Hash chain" section defines them, and answers the chain hash at
every chained position and each position whose stored chain8 disagrees. Tests compare
its hashes with the engine's (the receipts ``append`` returns).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass, field

import zstandard
from crc32c import crc32c

SEGMENT_HEADER = 24
RECORD_HEADER = 20
WIRE_HEADER = struct.Struct("<IIHIIIQ")
GENESIS = bytes(32)


@dataclass
class ReferenceChain:
    hashes: dict[int, bytes] = field(default_factory=dict)
    """Chained position -> chain hash."""
    mismatches: list[int] = field(default_factory=list)
    """Positions whose chain8 is not the first 8 bytes of the recomputed chain hash."""
    committed: int = 0
    """Events with a kind 2 block (content erased or scrubbed)."""
    codecs: set[int] = field(default_factory=set)


def _dictionaries(data_dir: str) -> dict[int, bytes]:
    found: dict[int, bytes] = {}
    folder = os.path.join(data_dir, "dictionaries")
    if not os.path.isdir(folder):
        return found
    for name in os.listdir(folder):
        if not name.endswith(".zdict"):
            continue
        with open(os.path.join(folder, name), "rb") as f:
            data = f.read()
        magic, dict_id, crc = struct.unpack_from("<8sII", data)
        start = 32 if magic == b"LTZDICT2" else 16
        assert magic in (b"LTZDICT1", b"LTZDICT2") and crc32c(data[start:]) == crc, name
        found[dict_id] = data[start:]
    return found


def _records(path: str, check_crc: bool) -> list[tuple[int, int, bytes]]:
    """(kind, position, payload) of every record of a segment, CRC-checked (``check_crc``)."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"LTSEGMNT", path
    out = []
    at = SEGMENT_HEADER
    while at + RECORD_HEADER <= len(data):
        magic, _version, kind_flags, length, position = struct.unpack_from("<2sBBIQ", data, at)
        (crc,) = struct.unpack_from("<I", data, at + 16)
        if magic != b"LT":
            break
        payload = data[at + RECORD_HEADER : at + RECORD_HEADER + length]
        assert not check_crc or crc32c(payload, crc32c(data[at : at + 16])) == crc, f"{path}: crc at {at}"
        out.append((kind_flags & 0x0F, position, payload))
        at += RECORD_HEADER + length
    return out


def _fields(event_pb: bytes) -> dict[int, bytes]:
    """Length-delimited fields of a protobuf message (the others skipped)."""
    out: dict[int, bytes] = {}
    at = 0

    def varint() -> int:
        nonlocal at
        value = shift = 0
        while True:
            byte = event_pb[at]
            at += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7

    while at < len(event_pb):
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            varint()
        elif wire == 2:
            size = varint()
            out[number] = event_pb[at : at + size]
            at += size
        elif wire == 1:
            at += 8
        elif wire == 5:
            at += 4
        else:
            raise AssertionError(f"wire type {wire}")
    return out


def _lp(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _digest(
    position: int, recorded_at: int, timestamp: int, account: bytes, meta: list[object], commitment: bytes
) -> bytes:
    (
        event_id,
        event_type,
        lead_id,
        flow_id,
        entity_id,
        outcome,
        _reason,
        duration,
        integration,
        code,
        price,
    ) = meta
    text = [str(v).encode() for v in (event_id, event_type, lead_id, flow_id, entity_id)]
    return hashlib.sha256(
        b"leadtrail event v1\x00"
        + struct.pack(">QQQ", position, recorded_at, timestamp)
        + _lp(account)
        + b"".join(_lp(t) for t in text)
        + struct.pack(">BI", int(outcome), int(duration))  # type: ignore[call-overload]
        + _lp(str(integration).encode())
        + struct.pack(">I", int(code))  # type: ignore[call-overload]
        + _lp(str(price).encode())
        + commitment
    ).digest()


def walk(data_dir: str, check_crc: bool = True) -> ReferenceChain:
    """The chain of the store in ``data_dir`` (not open by anyone writing it)."""
    dictionaries = _dictionaries(data_dir)
    result = ReferenceChain()
    chain_hash = GENESIS
    log_dir = os.path.join(data_dir, "log")
    for name in sorted(n for n in os.listdir(log_dir) if n.endswith(".log")):
        bodies: dict[int, bytes] = {}
        for kind, position, payload in _records(os.path.join(log_dir, name), check_crc):
            if kind != 1:
                continue
            rec_lo, rec_hi, ts_lo, ts_hi, codec, dict_id, delta_back, account_len = struct.unpack_from(
                "<IHIHBHHB", payload
            )
            recorded_at = rec_hi << 32 | rec_lo
            timestamp = ts_hi << 32 | ts_lo
            account = payload[18 : 18 + account_len]
            frame = payload[18 + account_len :]
            result.codecs.add(codec)
            if codec == 5:
                body = frame
            elif codec in (6, 7, 8):
                if codec == 6:
                    dictionary = zstandard.ZstdCompressionDict(dictionaries[dict_id])
                elif codec == 8:
                    base = bodies[position - delta_back]
                    dictionary = zstandard.ZstdCompressionDict(base, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
                else:
                    dictionary = None
                decompressor = zstandard.ZstdDecompressor(
                    dict_data=dictionary, format=zstandard.FORMAT_ZSTD1_MAGICLESS
                )
                body = decompressor.decompress(frame)
            else:
                continue  # a JSON body (formats 1.0, 1.1): not chained
            bodies[position] = body
            meta_len, event_len, _head, _json_at, _lead_at, changes_len, _base = WIRE_HEADER.unpack_from(body)
            end = WIRE_HEADER.size + meta_len + event_len + changes_len
            block = body[end:]
            if not block:
                continue
            meta = json.loads(body[WIRE_HEADER.size : WIRE_HEADER.size + meta_len])
            event_pb = body[WIRE_HEADER.size + meta_len : WIRE_HEADER.size + meta_len + event_len]
            values = _fields(event_pb)
            if block[0] == 1 and len(block) == 25:
                salt, chain8 = block[1:17], block[17:]
                reason = str(meta[6]).encode()
                commitment = hashlib.sha256(
                    b"leadtrail content v1\x00"
                    + salt
                    + _lp(reason)
                    + _lp(values.get(18, b""))
                    + _lp(values.get(19, b""))
                ).digest()
            elif block[0] == 2 and len(block) == 41:
                commitment, chain8 = block[1:33], block[33:]
                result.committed += 1
            else:
                raise AssertionError(f"position {position}: a block of {len(block)} bytes")
            digest = _digest(position, recorded_at, timestamp, account, meta, commitment)
            chain_hash = hashlib.sha256(chain_hash + digest).digest()
            result.hashes[position] = chain_hash
            if chain_hash[:8] != chain8:
                result.mismatches.append(position)
    return result
