"""Control characters in the id fields: refused by name, whatever else the text holds."""

from __future__ import annotations

import pytest
from leadtrail.storage import Event, Options, ValidationError
from leadtrail.storage.validation import NO_CONTROL_CHARACTERS, validate_batch


def event(**changes: str) -> Event:
    values = {"type": "lead.received", "lead_id": "lead-1", "flow_id": "flow-1", "entity_id": "buyer-1"}
    values.update(changes)
    return Event(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize("field", ["lead_id", "flow_id", "entity_id"])
@pytest.mark.parametrize("control", ["\x00", "\n", "\x1f", "\x7f"])
def test_a_control_character_in_an_id_field_is_refused_by_name(field: str, control: str) -> None:
    with pytest.raises(ValidationError) as info:
        validate_batch([event(lead_id="lead-0"), event(**{field: f"a{control}b"})], Options())
    assert info.value.index == 1
    assert info.value.field == field
    assert NO_CONTROL_CHARACTERS in str(info.value)


UNPRINTABLE_BUT_ALLOWED = ["lead\u00a0one", "lead\u2028two", "zero\u200bwidth", "caf\u00e9", "\x85next"]


@pytest.mark.parametrize("text", UNPRINTABLE_BUT_ALLOWED)
def test_unprintable_characters_that_are_not_controls_are_accepted(text: str) -> None:
    for field in ("lead_id", "flow_id", "entity_id"):
        assert len(validate_batch([event(**{field: text})], Options())) == 1
