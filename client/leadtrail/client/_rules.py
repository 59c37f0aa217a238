"""Field rules: conditions on a snapshot, details or event field (API.md § Field rules).

A rule is written as the command line takes it (``lead.state==TX``, ``price>=20``,
``lead.state in TX,CA``, ``reason contains cap``, ``lead.phone exists``,
``lead.phone not exists``) or built as a ``FieldRule``. The server evaluates them;
this module only checks their shape, so that a typo fails before any call.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from leadtrail.v1 import event_pb2

EVENT_RULE_FIELDS = ("price", "duration_ms", "response_code", "reason", "integration")
"""The event fields a rule may read besides ``lead.<name>`` and ``details.<name>``."""

_FIELD = re.compile(r"(?:lead|details)\.\S+|" + "|".join(EVENT_RULE_FIELDS))


class RuleOp(enum.IntEnum):
    """How a rule compares (values as in ``leadtrail.v1.RuleOp``)."""

    EQ = 1
    NE = 2
    LT = 3
    LE = 4
    GT = 5
    GE = 6
    IN = 7
    """Equal to any of the values."""
    CONTAINS = 8
    """A string holding the value (case-sensitive)."""
    EXISTS = 9
    NOT_EXISTS = 10


_SYMBOLS = {
    "==": RuleOp.EQ,
    "!=": RuleOp.NE,
    "<": RuleOp.LT,
    "<=": RuleOp.LE,
    ">": RuleOp.GT,
    ">=": RuleOp.GE,
}
_WORDS = {
    "in": RuleOp.IN,
    "contains": RuleOp.CONTAINS,
    "exists": RuleOp.EXISTS,
    "not exists": RuleOp.NOT_EXISTS,
}
_SPELLING = {**{op: symbol for symbol, op in _SYMBOLS.items()}, **{op: word for word, op in _WORDS.items()}}
_NO_VALUES = (RuleOp.EXISTS, RuleOp.NOT_EXISTS)


def _rule_op(value: object) -> RuleOp:
    """A ``RuleOp`` from itself, its number, its name in any case (``"ge"``) or its spelling
    in the rule text (``">="``, ``"not exists"``)."""
    if isinstance(value, RuleOp):
        return value
    if isinstance(value, str):
        text = " ".join(value.split()).lower()
        found = _SYMBOLS.get(text) or _WORDS.get(text)
        if found is None and text.upper().replace(" ", "_") in RuleOp.__members__:
            found = RuleOp[text.upper().replace(" ", "_")]
        if found is not None:
            return found
    elif isinstance(value, int) and not isinstance(value, bool) and value in set(RuleOp):
        return RuleOp(value)
    names = ", ".join(_SPELLING.values())
    raise ValueError(f"rule operator {value!r}: expected one of {names}")


def _operand(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise TypeError(f"a rule value must be a string or a number, not {value!r}")
    if isinstance(value, Decimal):
        return format(value, "f")  # fixed point: str() would write 1E+2
    return repr(value)


@dataclass(frozen=True)
class FieldRule:
    """One condition on an event: ``field`` is ``lead.<name>`` (a snapshot field by its flat
    dotted name), ``details.<name>`` or an event field (``price``, ``duration_ms``,
    ``response_code``, ``reason``, ``integration``). ``values``: one for EQ..GE and CONTAINS,
    one or more for IN, none for EXISTS and NOT_EXISTS; numbers may be given as numbers.
    ``op`` takes a ``RuleOp``, its name (``"ge"``) or its symbol (``">="``); a lone value
    is one value. ``str(rule)`` is the rule as the command line writes it."""

    field: str
    op: RuleOp
    values: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "op", _rule_op(self.op))
        values: object = self.values
        listed = [values] if isinstance(values, str | int | float | Decimal) else list(self.values)
        object.__setattr__(self, "values", tuple(_operand(v) for v in listed))
        problem = rule_problem(self)
        if problem:
            raise ValueError(f"rule {str(self)!r}: {problem}")

    def __str__(self) -> str:
        spelling = _SPELLING[self.op]
        if self.op in _NO_VALUES:
            return f"{self.field} {spelling}"
        if self.op in (RuleOp.IN, RuleOp.CONTAINS):
            return f"{self.field} {spelling} {','.join(self.values)}"
        return f"{self.field}{spelling}{''.join(self.values)}"


def rule_problem(rule: FieldRule) -> str:
    """What is wrong with the rule's shape ("" when nothing): its field or operand count."""
    if not _FIELD.fullmatch(rule.field):
        events = ", ".join(EVENT_RULE_FIELDS)
        return f"field {rule.field!r} is not lead.<name>, details.<name> or one of {events}"
    count = len(rule.values)
    if rule.op in _NO_VALUES and count:
        return f"{_SPELLING[rule.op]} takes no value, not {count}"
    if rule.op is RuleOp.IN and not count:
        return "in takes one or more values"
    if rule.op not in _NO_VALUES and rule.op is not RuleOp.IN and count != 1:
        return f"{_SPELLING[rule.op]} takes one value, not {count}"
    return ""


_WORD_RULE = re.compile(r"\s*(?P<field>\S+)\s+(?P<op>not\s+exists|exists)\s*", re.IGNORECASE)
_LIST_RULE = re.compile(
    r"\s*(?P<field>\S+)\s+(?P<op>in|contains)\s+(?P<rest>.*?)\s*", re.IGNORECASE | re.DOTALL
)
_SYMBOL_RULE = re.compile(r"\s*(?P<field>[^\s=!<>]+)\s*(?P<op>==|!=|<=|>=|<|>)\s*(?P<rest>.*?)\s*", re.DOTALL)


def parse_rule(text: str) -> FieldRule:
    """A rule from its command-line form: ``lead.state==TX``, ``!=``, ``<``, ``<=``, ``>``,
    ``>=``, ``lead.state in TX,CA``, ``reason contains cap``, ``lead.phone exists``,
    ``lead.phone not exists``. Spaces around a symbol and around ``in`` values are dropped.
    ``ValueError`` naming the rule and what is wrong with it."""
    if not isinstance(text, str):
        raise TypeError(f"a rule must be a string or a FieldRule, not {text!r}")
    op: RuleOp
    # A symbol first: its field holds no space, so "lead.note==a contains b" compares to
    # "a contains b", while "reason contains a<b" has no symbol right after its field.
    if match := _SYMBOL_RULE.fullmatch(text):
        field, op, values = match["field"], _SYMBOLS[match["op"]], [match["rest"]]
    elif match := _WORD_RULE.fullmatch(text):
        field, op, values = match["field"], _rule_op(match["op"]), []
    elif match := _LIST_RULE.fullmatch(text):
        field, op = match["field"], _rule_op(match["op"])
        rest = match["rest"]
        if op is RuleOp.IN:
            values = [value.strip() for value in rest.split(",")]
            if any(not value for value in values):
                raise ValueError(f"rule {text!r}: an empty value in the list {rest!r}")
        else:
            values = [rest]
    else:
        hint = "; use == to compare" if re.fullmatch(r"[^=]+=[^=].*", text) else ""
        raise ValueError(
            f"rule {text!r}: expected FIELD OP VALUE with OP one of ==, !=, <, <=, >, >=, "
            f"'in a,b', 'contains x', 'exists', 'not exists'{hint}"
        )
    try:
        return FieldRule(field, op, tuple(values))
    except ValueError as e:
        reason = str(e).split(": ", 1)[-1]
        raise ValueError(f"rule {text!r}: {reason}") from None


def field_rules(where: FieldRule | str | Iterable[FieldRule | str] | None) -> tuple[FieldRule, ...]:
    """The rules of a ``where=`` argument: one rule or several, each a ``FieldRule`` or its text."""
    if where is None:
        return ()
    listed = [where] if isinstance(where, FieldRule | str) else list(where)
    return tuple(rule if isinstance(rule, FieldRule) else parse_rule(rule) for rule in listed)


def field_rule_to_proto(rule: FieldRule) -> event_pb2.FieldRule:
    return event_pb2.FieldRule(field=rule.field, op=event_pb2.RuleOp.ValueType(rule.op), values=rule.values)


def field_rule_from_proto(message: event_pb2.FieldRule) -> FieldRule:
    """A rule as the server returned it (in a stored alert rule, sink or export job)."""
    return FieldRule(message.field, _rule_op(message.op), tuple(message.values))
