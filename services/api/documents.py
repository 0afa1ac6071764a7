"""Request bodies that certfleet parses itself (inventory YAML and JSON), bounded.

A hostile document must cost no more than its size: nesting is limited to MAX_DEPTH (deeper
would exhaust the parser's recursion), and YAML aliases may not expand the document past
EXPANSION_FACTOR times the nodes it spells out (a "billion laughs" of a few hundred bytes
would otherwise become gigabytes once stored). Everything else a client sends as JSON is
parsed by webargs; a body nested past the interpreter's recursion limit ends in the API's
RecursionError handler (400) before any route runs.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from shared.errors import ValidationFailed

MAX_DEPTH = 64
EXPANSION_FACTOR = 4
MIN_NODES = 10_000


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that counts every node as it would be expanded, and the nesting depth."""

    def __init__(self, stream: str | bytes, max_nodes: int) -> None:
        super().__init__(stream)
        self.max_nodes = max_nodes
        self.nodes = 0
        self.depth = 0
        self.expanded: dict[int, int] = {}

    def _count(self, n: int) -> None:
        self.nodes += n
        if self.nodes > self.max_nodes:
            raise ValidationFailed(
                "the document's aliases expand it far beyond what was sent; write it out"
            )

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            anchor = self.peek_event().anchor
            target = self.anchors.get(anchor)
            if target is not None and id(target) not in self.expanded:
                raise ValidationFailed("the document has an alias inside its own anchor")
            self._count(self.expanded.get(id(target), 1) if target is not None else 1)
            return super().compose_node(parent, index)
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ValidationFailed(f"the document is nested deeper than {MAX_DEPTH} levels")
        before = self.nodes
        self._count(1)
        try:
            node = super().compose_node(parent, index)
        finally:
            self.depth -= 1
        self.expanded[id(node)] = self.nodes - before
        return node


def load_yaml(raw: bytes) -> Any:
    spelled_out = raw.count(b"\n") + raw.count(b",") + raw.count(b":") + raw.count(b"-") + 1
    loader = _BoundedLoader(raw, max(MIN_NODES, EXPANSION_FACTOR * spelled_out))
    try:
        return loader.get_single_data()
    except RecursionError as exc:
        raise ValidationFailed(f"the document is nested deeper than {MAX_DEPTH} levels") from exc
    finally:
        loader.dispose()


def load_json(raw: bytes) -> Any:
    try:
        doc = json.loads(raw)
    except RecursionError as exc:
        raise ValidationFailed(f"the document is nested deeper than {MAX_DEPTH} levels") from exc
    if depth(doc) > MAX_DEPTH:
        raise ValidationFailed(f"the document is nested deeper than {MAX_DEPTH} levels")
    return doc


def depth(value: Any) -> int:
    """How deeply lists and objects nest in a parsed JSON value (a scalar: 0)."""
    deepest, level = 0, [(value, 1)]
    while level:
        item, d = level.pop()
        if isinstance(item, dict):
            children: list[Any] = list(item.values())
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, d)
        level.extend((child, d + 1) for child in children)
    return deepest
