"""Pydantic's validation errors said for the admin: the file's table and key, and the likely typo."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any, get_args

from pydantic import BaseModel, ValidationError


def describe_errors(error: ValidationError, raw: Mapping[str, Any], root: type[BaseModel]) -> list[str]:
    """One line per error of ``raw`` read as ``root``: where it is in the file, and what is wrong."""
    lines = []
    for item in error.errors():
        where = _format_location(tuple(item["loc"]), raw)
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = _unknown_key_message(root, tuple(item["loc"]))
        lines.append(f"  {where}: {message}")
    return lines


def _format_location(loc: tuple[int | str, ...], raw: Mapping[str, Any]) -> str:
    parts: list[str] = []
    node: Any = raw
    for item in loc:
        if isinstance(item, int) and parts:
            label = f"#{item + 1}"
            if isinstance(node, list) and item < len(node) and isinstance(node[item], dict):
                ident = node[item].get("id") or node[item].get("name")
                if ident:
                    label = f"{label} ({ident})"
            parts[-1] = f"[[{parts[-1].strip('[]')}]] {label}"
            node = node[item] if isinstance(node, list) and item < len(node) else None
        else:
            parts.append(str(item))
            node = node.get(item) if isinstance(node, dict) else None
    return " ".join(parts) or "(top level)"


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The settings model an annotation holds (``list[CallSettings]``, ``SmtpSettings | None`` …)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in get_args(annotation):
        found = _model_in(argument)
        if found is not None:
            return found
    return None


def _model_at(root: type[BaseModel], loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] | None = root
    for item in loc:
        if isinstance(item, int):
            continue
        field = model.model_fields.get(item) if model else None
        if field is None:
            return None
        model = _model_in(field.annotation)
    return model


def _unknown_key_message(root: type[BaseModel], loc: tuple[int | str, ...]) -> str:
    """An unknown key, with the nearest valid one of its table (a typo is the usual cause)."""
    key = str(loc[-1])
    model = _model_at(root, loc[:-1])
    valid = sorted(model.model_fields) if model else []
    nearest = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    if nearest:
        return f"unknown key {key!r}: did you mean `{nearest[0]}`?"
    if valid:
        return f"unknown key {key!r}; the keys here are: {', '.join(valid)}"
    return f"unknown key {key!r}"
