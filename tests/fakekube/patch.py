"""The three PATCH flavours the official client sends, applied to plain dicts.

JSON merge patch (RFC 7386) also stands in for strategic merge patch: for the
objects the handler patches (annotations, labels, scalar spec fields) the two
agree, and only list-merge-by-key differs, which the fake does not model.
JSON patch (RFC 6902) supports add, remove, replace, test, move and copy.
"""

import copy

MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
CONTENT_TYPES = (MERGE, STRATEGIC, JSON_PATCH)


class PatchError(ValueError):
    """The patch is well-formed JSON but cannot apply to this document."""


class TestFailed(PatchError):
    """A JSON patch ``test`` operation did not hold."""

    __test__ = False  # not a pytest test class


def merge_patch(target: object, patch: object) -> object:
    """RFC 7386: objects merge recursively, ``null`` deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _tokens(pointer: str) -> list[str]:
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise PatchError(f"invalid JSON pointer {pointer!r}")
    return [t.replace("~1", "/").replace("~0", "~") for t in pointer[1:].split("/")]


def _index(container: list, token: str, *, allow_end: bool) -> int:
    if allow_end and token == "-":
        return len(container)
    if not token.isdigit():
        raise PatchError(f"invalid array index {token!r}")
    index = int(token)
    if index > len(container) or (index == len(container) and not allow_end):
        raise PatchError(f"array index {index} out of bounds")
    return index


def _parent(doc: object, pointer: str) -> tuple[object, str]:
    tokens = _tokens(pointer)
    if not tokens:
        raise PatchError("operation on the document root is not supported")
    node = doc
    for token in tokens[:-1]:
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(node, token, allow_end=False)]
        else:
            raise PatchError(f"doc is missing path: {pointer}")
    return node, tokens[-1]


def _get(doc: object, pointer: str) -> object:
    parent, last = _parent(doc, pointer)
    if isinstance(parent, dict) and last in parent:
        return parent[last]
    if isinstance(parent, list):
        return parent[_index(parent, last, allow_end=False)]
    raise PatchError(f"doc is missing key: {pointer}")


def _add(doc: object, pointer: str, value: object) -> None:
    parent, last = _parent(doc, pointer)
    if isinstance(parent, dict):
        parent[last] = copy.deepcopy(value)
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, allow_end=True), copy.deepcopy(value))
    else:
        raise PatchError(f"doc is missing path: {pointer}")


def _remove(doc: object, pointer: str) -> object:
    parent, last = _parent(doc, pointer)
    if isinstance(parent, dict) and last in parent:
        return parent.pop(last)
    if isinstance(parent, list):
        return parent.pop(_index(parent, last, allow_end=False))
    raise PatchError(f"remove operation does not apply: doc is missing path: {pointer}")


def json_patch(target: dict, operations: list) -> dict:
    """RFC 6902 applied to a copy of ``target``; raises PatchError on failure."""
    if not isinstance(operations, list):
        raise PatchError("a JSON patch must be a list of operations")
    doc = copy.deepcopy(target)
    for operation in operations:
        op, path = operation.get("op"), operation.get("path", "")
        if op == "add":
            _add(doc, path, operation.get("value"))
        elif op == "remove":
            _remove(doc, path)
        elif op == "replace":
            _get(doc, path)
            _remove(doc, path)
            _add(doc, path, operation.get("value"))
        elif op == "test":
            if _get(doc, path) != operation.get("value"):
                raise TestFailed(f"testing value {path} failed")
        elif op in ("move", "copy"):
            value = _get(doc, operation.get("from", ""))
            if op == "move":
                _remove(doc, operation["from"])
            _add(doc, path, value)
        else:
            raise PatchError(f"unexpected kind of operation: {op!r}")
    return doc


def apply(content_type: str, target: dict, patch: object) -> dict:
    """Apply ``patch`` of ``content_type`` (one of CONTENT_TYPES) to a copy of ``target``."""
    if content_type == JSON_PATCH:
        return json_patch(target, patch)
    if not isinstance(patch, dict):
        raise PatchError("a merge patch must be a JSON object")
    return merge_patch(target, patch)
