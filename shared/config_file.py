"""Configuration files a person edits (routing rules, SLA policies, notifier routes): YAML
read with each node's line kept, so that every refusal names the file, the line and the
reason (``path:line: where: reason``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml
from pydantic import ValidationError

Loc = Sequence[int | str]


def read_yaml(text: str, path: str) -> tuple[Any, yaml.Node | None]:
    """The document's data and its node tree (for lines). Raises ``ValueError`` naming the
    line for text that is not YAML."""
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise ValueError(f"{path}:{line}: not valid YAML: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:  # pragma: no cover - unmarked YAML errors are rare
        raise ValueError(f"{path}:1: not valid YAML: {exc}") from None
    return data, root


def node_at(root: yaml.Node, loc: Loc) -> yaml.Node:
    """The deepest YAML node along a pydantic error location."""
    node = root
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            pairs = [(k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode)]
            nxt = next((v for k, v in pairs if k.value == part), None)
            if nxt is None:
                # An unknown key: point at the key itself.
                key = next((k for k, _ in pairs if k.value == str(part)), None)
                return key if key is not None else node
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return node
            node = node.value[part]
        else:
            return node
    return node


def located(path: str, root: yaml.Node | None, loc: Loc, reason: str, top: str = "(top)") -> str:
    """``path:line: where: reason`` for the value at ``loc`` (``path: where: reason``
    without a node tree, as for TOML)."""
    where = ".".join(str(p) for p in loc) or top
    if root is None:
        return f"{path}: {where}: {reason}"
    return f"{path}:{node_at(root, loc).start_mark.line + 1}: {where}: {reason}"


def error_loc(error: Any) -> list[int | str]:
    return [p for p in error["loc"] if isinstance(p, int | str)]


def validation_reasons(
    exc: ValidationError,
    path: str,
    root: yaml.Node | None,
    top: str = "(top)",
    *,
    show_values: bool = True,
) -> str:
    """Every problem of a validation error, each with its line, joined by ``; ``; with
    the offending value unless ``show_values`` is off (files whose values may be secrets)."""
    return "; ".join(
        located(path, root, error_loc(e), _message(e, show_values), top) for e in exc.errors()
    )


def _message(error: Any, show_value: bool) -> str:
    value = error.get("input")
    shown = show_value and isinstance(value, str | int | float)
    return f"{error['msg']} (got {value!r})" if shown else str(error["msg"])
