"""Field rules: conditions on an event's snapshot, details and some of its fields
(``EventFilter.where``, API.md § Field rules).

A rule names a field and compares it with operands given as text:

- ``lead.<name>``: the snapshot field of that flat dotted name (``appended.phone_check.carrier``);
  when no key has the whole name, nested objects are followed along its dots.
- ``details.<name>``: the same in ``details``.
- ``price`` (an exact decimal), ``duration_ms``, ``response_code`` (numbers), ``reason``,
  ``integration`` (text).

What a rule holds for, decided once here for every reader of the log:

- A field is missing when the key is absent or its value is JSON ``null``; an empty
  ``price``, ``reason`` or ``integration`` and a ``response_code`` of 0 mean "none" on the
  wire, so they are missing too (``duration_ms`` is always there). A missing field matches
  nothing but ``NOT_EXISTS``; in particular ``NE`` on a missing field does not match:
  ``NE`` holds when the field exists and ``EQ`` does not.
- A JSON number (and ``price``) compares as a number with an operand read as a decimal,
  exactly (``0.1`` in a snapshot equals the operand ``0.1``); against an operand that is not
  a number it is neither equal nor ordered. A string compares as a string, by code point
  (``"10" < "9"``), whatever its operand looks like. ``true``/``false`` equal the operands
  ``true``/``false`` and have no order. Objects and lists equal nothing and have no order.
- ``CONTAINS`` holds for a string holding the operand (case-sensitive), for nothing else.
- ``IN`` holds when ``EQ`` holds for any operand.

A rule's shape is checked when it is made (``RuleError`` naming the problem and the limit):
what reaches ``matches`` is always well formed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as derived
from decimal import Decimal
from enum import IntEnum
from typing import Any, Protocol

from .errors import InvalidArgumentError
from .fields import PII, Classify

MAX_RULES = 20
"""Rules per filter."""
MAX_IN_VALUES = 100
"""Operands of one ``IN`` rule."""
MAX_OPERAND_BYTES = 1024
"""UTF-8 bytes of one operand."""
MAX_FIELD_LENGTH = 256
"""Characters of a rule's field, ``lead.``/``details.`` included."""

NUMBER_FIELDS = ("price", "duration_ms", "response_code")
TEXT_FIELDS = ("reason", "integration")
EVENT_FIELDS = NUMBER_FIELDS + TEXT_FIELDS
SNAPSHOT_ROOT = "lead."
DETAILS_ROOT = "details."

_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d{1,6})?")
"""A decimal operand: no NaN, no infinity, and an exponent a person would write."""


class RuleOp(IntEnum):
    """Numbered as the ``leadtrail.v1.RuleOp`` enum (0, unspecified, is no operator)."""

    EQ = 1
    NE = 2
    LT = 3
    LE = 4
    GT = 5
    GE = 6
    IN = 7
    CONTAINS = 8
    EXISTS = 9
    NOT_EXISTS = 10


_ORDERED = frozenset({RuleOp.LT, RuleOp.LE, RuleOp.GT, RuleOp.GE})
_NO_OPERAND = frozenset({RuleOp.EXISTS, RuleOp.NOT_EXISTS})


class RuleError(InvalidArgumentError):
    """A rule (or a filter's list of them) that cannot be evaluated; ``problem`` says why and
    names the limit, ``index`` is the rule's place in the filter when known."""

    def __init__(self, problem: str, index: int | None = None) -> None:
        super().__init__(problem if index is None else f"where[{index}]: {problem}")
        self.problem = problem
        self.index = index


class RuleSubject(Protocol):
    """What a rule reads of an event (``Event`` has it)."""

    @property
    def price(self) -> str: ...
    @property
    def reason(self) -> str: ...
    @property
    def duration_ms(self) -> int: ...
    @property
    def integration(self) -> str: ...
    @property
    def response_code(self) -> int: ...
    @property
    def details(self) -> Mapping[str, Any]: ...
    @property
    def lead(self) -> Mapping[str, Any]: ...


def decimal_operand(text: str) -> Decimal | None:
    """The operand as an exact decimal, or None when it is not a number."""
    stripped = text.strip()
    return Decimal(stripped) if _NUMBER.fullmatch(stripped) else None


@dataclass(frozen=True, slots=True)
class Operand:
    """One operand in each form a value may be compared with."""

    text: str
    number: Decimal | None
    boolean: bool | None

    @classmethod
    def of(cls, text: str) -> Operand:
        lowered = text.strip().lower()
        boolean = True if lowered == "true" else False if lowered == "false" else None
        return cls(text, decimal_operand(text), boolean)


_MISSING: Any = object()


@dataclass(frozen=True, slots=True)
class FieldRule:
    """One condition; made only well formed (``RuleError`` otherwise). Equal rules compare and
    hash equal by (field, op, values) alone."""

    field: str
    op: RuleOp
    values: tuple[str, ...] = ()
    root: str = derived(init=False, compare=False, repr=False)
    """"lead", "details" or the event field's name."""
    name: str = derived(init=False, compare=False, repr=False)
    """The field within the snapshot or the details ("" for an event field)."""
    operands: tuple[Operand, ...] = derived(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        op = _op(self.op)
        object.__setattr__(self, "op", op)
        object.__setattr__(self, "values", tuple(self.values))
        root, name = _root(self.field)
        object.__setattr__(self, "root", root)
        object.__setattr__(self, "name", name)
        _check_operands(root, op, self.values)
        object.__setattr__(self, "operands", tuple(Operand.of(v) for v in self.values))

    @property
    def reads_lead(self) -> bool:
        return self.root == "lead"

    def holds(self, event: RuleSubject) -> bool:
        value = self._value(event)
        op = self.op
        if value is _MISSING:
            return op is RuleOp.NOT_EXISTS
        if op is RuleOp.EXISTS:
            return True
        if op is RuleOp.NOT_EXISTS:
            return False
        if op is RuleOp.EQ:
            return _equals(value, self.operands[0])
        if op is RuleOp.NE:
            return not _equals(value, self.operands[0])
        if op is RuleOp.IN:
            return any(_equals(value, operand) for operand in self.operands)
        if op is RuleOp.CONTAINS:
            return isinstance(value, str) and self.operands[0].text in value
        order = _order(value, self.operands[0])
        if order is None:
            return False
        if op is RuleOp.LT:
            return order < 0
        if op is RuleOp.LE:
            return order <= 0
        if op is RuleOp.GT:
            return order > 0
        return order >= 0  # GE

    def _value(self, event: RuleSubject) -> Any:
        root = self.root
        if root == "lead":
            return lookup(event.lead, self.name)
        if root == "details":
            return lookup(event.details, self.name)
        if root == "price":
            return Decimal(event.price) if event.price else _MISSING
        if root == "duration_ms":
            return event.duration_ms
        if root == "response_code":
            return event.response_code or _MISSING
        text = event.reason if root == "reason" else event.integration
        return text or _MISSING


def lookup(data: Mapping[str, Any], name: str) -> Any:
    """The value of the flat dotted ``name`` in ``data``, else along nested objects; missing
    (absent or null): ``_MISSING``."""
    value = data.get(name)
    if value is not None:
        return value
    if name in data:
        return _MISSING  # null
    dot = name.find(".")
    while dot > 0:
        inner = data.get(name[:dot])
        if isinstance(inner, Mapping):
            found = lookup(inner, name[dot + 1 :])
            if found is not _MISSING:
                return found
        dot = name.find(".", dot + 1)
    return _MISSING


def _number(value: Any) -> Decimal | None:
    """A JSON number (or a price) as an exact decimal: a float by its shortest repr, which is
    the text the producer's JSON held."""
    kind = type(value)
    if kind is int or kind is Decimal:
        return Decimal(value)
    if kind is float:
        return Decimal(repr(value)) if math.isfinite(value) else None
    return None


def _equals(value: Any, operand: Operand) -> bool:
    if isinstance(value, str):
        return value == operand.text
    if isinstance(value, bool):
        return operand.boolean is value
    number = _number(value)
    if number is None or operand.number is None:
        return False
    return number == operand.number


def _order(value: Any, operand: Operand) -> int | None:
    """The sign of value - operand, None when they have no order."""
    if isinstance(value, str):
        return (value > operand.text) - (value < operand.text)
    if isinstance(value, bool):
        return None
    number = _number(value)
    if number is None or operand.number is None:
        return None
    return (number > operand.number) - (number < operand.number)


def _op(value: object) -> RuleOp:
    if isinstance(value, RuleOp):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value in set(RuleOp):
        return RuleOp(value)
    if value == 0:
        raise RuleError(
            "op is RULE_OP_UNSPECIFIED; choose EQ, NE, LT, LE, GT, GE, IN, CONTAINS, EXISTS or NOT_EXISTS"
        )
    raise RuleError(f"op {value!r} is not a known RuleOp (1..{len(RuleOp)})")


def _root(name: str) -> tuple[str, str]:
    if not isinstance(name, str) or not name:
        raise RuleError("field is empty; name lead.<name>, details.<name> or an event field")
    if len(name) > MAX_FIELD_LENGTH:
        raise RuleError(f"field is {len(name)} characters, over the limit of {MAX_FIELD_LENGTH}")
    for prefix in (SNAPSHOT_ROOT, DETAILS_ROOT):
        if name.startswith(prefix):
            inner = name[len(prefix) :]
            if not inner:
                raise RuleError(f"field {name!r} names no field after {prefix!r}")
            return prefix[:-1], inner
    if name in EVENT_FIELDS:
        return name, ""
    raise RuleError(f"field {name!r} is not lead.<name>, details.<name> or one of {', '.join(EVENT_FIELDS)}")


def _check_operands(root: str, op: RuleOp, values: Sequence[str]) -> None:
    count = len(values)
    spelled = op.name
    if op in _NO_OPERAND:
        if count:
            raise RuleError(f"{spelled} takes no value, {count} given")
        return
    if op is RuleOp.IN:
        if not 1 <= count <= MAX_IN_VALUES:
            raise RuleError(f"IN takes 1 to {MAX_IN_VALUES} values, {count} given")
    elif count != 1:
        raise RuleError(f"{spelled} takes exactly one value, {count} given")
    for i, value in enumerate(values):
        where = f"values[{i}]"
        if not isinstance(value, str):
            raise RuleError(f"{where} is not text")
        size = len(value.encode("utf-8", "surrogatepass"))
        if size > MAX_OPERAND_BYTES:
            raise RuleError(f"{where} is {size} bytes, over the limit of {MAX_OPERAND_BYTES}")
        if root in NUMBER_FIELDS:
            if op is RuleOp.CONTAINS:
                raise RuleError(f"CONTAINS applies to text; {root} is a number")
            if decimal_operand(value) is None:
                kind = "an exact decimal" if root == "price" else "a number"
                raise RuleError(f"{where} {value[:40]!r} is not a number; {root} compares with {kind}")


def checked_rules(rules: Sequence[FieldRule]) -> tuple[FieldRule, ...]:
    """The rules of one filter, within the limit on their number."""
    if len(rules) > MAX_RULES:
        raise RuleError(f"{len(rules)} rules, over the limit of {MAX_RULES}")
    for rule in rules:
        if not isinstance(rule, FieldRule):
            raise RuleError(f"{rule!r} is not a FieldRule")
    return tuple(rules)


def rules_hold(rules: Sequence[FieldRule], event: RuleSubject) -> bool:
    """Whether every rule holds for the event."""
    return all(rule.holds(event) for rule in rules)


def reads_lead(rules: Sequence[FieldRule]) -> bool:
    """Whether a rule reads the snapshot: only then must a scan decode it."""
    return any(rule.reads_lead for rule in rules)


def personal_rule(rules: Sequence[FieldRule], classify: Classify) -> int | None:
    """The index of the first rule on a snapshot or details field that ``classify`` classes
    personal (pii), or None. A role that sees personal values masked may not filter on them:
    matching runs on the stored values, so such a rule would tell it what the mask hides.
    (Secret fields hold fingerprints for every role: a rule on them reveals nothing.)"""
    for i, rule in enumerate(rules):
        if rule.root in ("lead", "details") and classify(rule.name) == PII:
            return i
    return None


def rule_json(rule: FieldRule) -> dict[str, Any]:
    """The rule as a stored configuration keeps it."""
    return {"field": rule.field, "op": int(rule.op), "values": list(rule.values)}


def rule_from_json(raw: Mapping[str, Any]) -> FieldRule:
    return FieldRule(raw["field"], RuleOp(raw["op"]), tuple(raw.get("values", ())))


__all__ = [
    "MAX_FIELD_LENGTH",
    "MAX_IN_VALUES",
    "MAX_OPERAND_BYTES",
    "MAX_RULES",
    "FieldRule",
    "RuleError",
    "RuleOp",
    "RuleSubject",
    "checked_rules",
    "personal_rule",
    "reads_lead",
    "rule_from_json",
    "rule_json",
    "rules_hold",
]
