"""Custom span rules: KFL filters that rename or drop the spans of matching entries.

Rule: rules are read and compiled once at start-up — a rule that does not parse stops the process
with the rule's position in the message — and the first matching rule wins.

Configuration is a JSON list, e.g.
`[{"match": "http && path.startsWith(\\"/api/checkout\\")", "name": "checkout"},
  {"match": "path == \\"/health\\"", "drop": true}]`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from wiretide.common.kfl import KflError, compile_predicate

# More rules than this would make every entry pay for a long scan; split the config instead.
MAX_RULES = 200


class RuleError(ValueError):
    """A rule set that cannot be used; the message says which rule and why."""


@dataclass(frozen=True, slots=True)
class SpanRule:
    match: str
    predicate: Callable[[dict[str, Any]], bool]
    name: str = ""
    drop: bool = False


@dataclass(frozen=True, slots=True)
class Verdict:
    drop: bool = False
    name: str = ""


KEEP = Verdict()


def parse_rules(text: str) -> tuple[SpanRule, ...]:
    """Parse the JSON rule list; raise RuleError naming the rule at fault."""
    if not text.strip():
        return ()
    try:
        raw = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise RuleError(f"span rules are not JSON: {exc}") from None
    if not isinstance(raw, list):
        raise RuleError("span rules must be a JSON list of {match, name | drop}")
    if len(raw) > MAX_RULES:
        raise RuleError(f"at most {MAX_RULES} span rules, got {len(raw)}")
    rules: list[SpanRule] = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("match"), str):
            raise RuleError(f"span rule {i}: needs a string 'match'")
        name = item.get("name", "")
        drop = item.get("drop", False)
        if not isinstance(name, str) or not isinstance(drop, bool) or (not name and not drop):
            raise RuleError(f"span rule {i}: needs a string 'name' or 'drop': true")
        try:
            predicate = compile_predicate(item["match"])
        except KflError as exc:
            raise RuleError(f"span rule {i} ({item['match']!r}): {exc}") from None
        rules.append(SpanRule(item["match"], predicate, name, drop))
    return tuple(rules)


def apply(rules: tuple[SpanRule, ...], entry: dict[str, Any]) -> Verdict:
    for rule in rules:
        if rule.predicate(entry):
            return Verdict(drop=rule.drop, name=rule.name)
    return KEEP
