"""The chain block of a new event: both twins give the same bytes, and those are what
FORMAT.md's digest makes (chain.commitment, chain.digest, chain.link)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from leadtrail.storage import _wireform_py, chain, wireform
from leadtrail.storage.format import BadRecord

texts = st.text(max_size=40)
blobs = st.binary(max_size=3000)


@settings(max_examples=150, deadline=None)
@given(
    prev=st.binary(min_size=32, max_size=32),
    salt=st.binary(min_size=16, max_size=16),
    numbers=st.tuples(
        st.integers(1, 2**63), st.integers(0, 2**48), st.integers(0, 2**48), st.integers(0, 4),
        st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1),
    ),
    words=st.tuples(texts, texts, texts, texts, texts, texts, texts, texts, texts),
    details=blobs,
    lead=blobs,
)  # fmt: skip
def test_both_twins_make_the_block_the_format_describes(
    prev: bytes,
    salt: bytes,
    numbers: tuple[int, ...],
    words: tuple[str, ...],
    details: bytes,
    lead: bytes,
) -> None:
    position, recorded, timestamp, outcome, duration, code = numbers
    account, event_id, event_type, lead_id, flow_id, entity_id, integration, price, reason = words
    args = (
        prev, salt, position, recorded, timestamp, account, event_id, event_type, lead_id, flow_id,
        entity_id, outcome, duration, integration, code, price, reason, details, lead,
    )  # fmt: skip
    pure = _wireform_py.chain_block(*args)
    meta = [
        event_id,
        event_type,
        lead_id,
        flow_id,
        entity_id,
        outcome,
        reason,
        duration,
        integration,
        code,
        price,
    ]
    content = chain.commitment(salt, reason, details, lead)
    expected = chain.link(prev, chain.digest(position, recorded, timestamp, account, meta, content))
    assert pure == (b"\x01" + salt + expected[:8], expected)
    assert chain.parse_block(pure[0]) == chain.Seal(chain.SALTED, salt, expected[:8])
    if wireform.CHAIN_COMPILED:
        assert wireform.chain_block(*args) == pure


@pytest.mark.parametrize("twin", ["pure", "compiled"])
def test_bad_arguments_are_refused_by_both_twins(twin: str) -> None:
    if twin == "compiled" and not wireform.CHAIN_COMPILED:
        pytest.skip("the compiled twin is not built here")  # the pure one is tested either way
    block = wireform.chain_block if twin == "compiled" else _wireform_py.chain_block
    good = [bytes(32), bytes(16), 1, 2, 3, "a", "i", "t", "l", "f", "e", 1, 0, "", 0, "", "", b"", b""]
    assert len(block(*good)[0]) == chain.SALTED_BLOCK_BYTES
    for at, bad, error in ((0, bytes(31), ValueError), (1, bytes(15), ValueError), (5, b"a", TypeError),
                           (11, 256, ValueError), (12, -1, ValueError), (17, "x", TypeError)):  # fmt: skip
        args = list(good)
        args[at] = bad
        with pytest.raises(error):
            block(*args)


def test_a_block_of_another_size_or_kind_is_damage() -> None:
    with pytest.raises(BadRecord):
        chain.parse_block(b"\x01" + bytes(23))
    with pytest.raises(BadRecord):
        chain.parse_block(b"\x02" + bytes(24))
    assert chain.parse_block(b"\x02" + bytes(40)).kind == chain.COMMITTED
