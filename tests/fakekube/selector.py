"""labelSelector and fieldSelector parsing, as the API server understands them.

Pure functions: a selector string becomes a predicate over a plain object dict.
Label selectors support equality (``k=v``, ``k==v``, ``k!=v``), existence
(``k``, ``!k``) and sets (``k in (a,b)``, ``k notin (a,b)``), comma-joined
(AND). Field selectors accept any dotted path (``metadata.name``,
``status.phase``) with ``=``, ``==``, ``!=``; the real server allows only a few
paths per resource, the fake is more lenient.
"""

import re
from collections.abc import Callable

Predicate = Callable[[dict], bool]

_LABEL_REQUIREMENT = re.compile(
    r"""\s*(?:
        !\s*(?P<absent>[^\s,=!()]+)
      | (?P<key>[^\s,=!()]+)\s*
        (?: (?P<op>==|=|!=)\s*(?P<value>[^\s,=!()]*)
          | \s(?P<setop>in|notin)\s*\((?P<values>[^)]*)\)
        )?
    )\s*(?:,|$)""",
    re.VERBOSE,
)

_FIELD_REQUIREMENT = re.compile(r"\s*(?P<path>[A-Za-z0-9_.-]+)\s*(?P<op>==|=|!=)\s*(?P<value>[^,]*?)\s*(?:,|$)")


def _parse(pattern: re.Pattern, text: str, what: str) -> list[re.Match]:
    matches, position = [], 0
    while position < len(text):
        match = pattern.match(text, position)
        if match is None or match.end() == position:
            raise ValueError(f"unable to parse requirement: invalid {what} selector {text!r}")
        matches.append(match)
        position = match.end()
    return matches


def _label_test(match: re.Match) -> Predicate:
    if match["absent"]:
        key = match["absent"]
        return lambda labels: key not in labels
    key = match["key"]
    if match["op"] in ("=", "=="):
        return lambda labels: labels.get(key) == match["value"]
    if match["op"] == "!=":
        return lambda labels: labels.get(key) != match["value"]
    if match["setop"]:
        values = {v.strip() for v in match["values"].split(",") if v.strip()}
        if match["setop"] == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    return lambda labels: key in labels


def label_selector(text: str | None) -> Predicate:
    """A predicate over objects for ``text``; raises ValueError when malformed."""
    tests = [_label_test(m) for m in _parse(_LABEL_REQUIREMENT, text or "", "label")]

    def matches(obj: dict) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(test(labels) for test in tests)

    return matches


def _field_value(obj: dict, path: str) -> str:
    value: object = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def field_selector(text: str | None) -> Predicate:
    """A predicate over objects for ``text``; raises ValueError when malformed."""
    requirements = [(m["path"], m["op"], m["value"])
                    for m in _parse(_FIELD_REQUIREMENT, text or "", "field")]

    def matches(obj: dict) -> bool:
        return all((_field_value(obj, path) == value) == (op in ("=", "=="))
                   for path, op, value in requirements)

    return matches


def combined(labels: str | None, fields: str | None) -> Predicate:
    by_labels, by_fields = label_selector(labels), field_selector(fields)
    return lambda obj: by_labels(obj) and by_fields(obj)
