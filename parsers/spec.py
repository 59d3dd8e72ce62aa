"""What a call's form looks like: the fields to read, their label variants and the topic list.

Built from the configuration (``[[call.field]]``, ``[[call.topic]]``) so that a fund office can
adapt the reader to its own form without touching code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

FieldKind = Literal[
    "text",  # free text kept as written (project title, department)
    "name",  # a person's name: spaces inside a Chinese name removed
    "institution",
    "email",
    "phone",
    "gender",  # 男 / 女 (Male / Female accepted)
    "title",  # professional title: 教授, 副研究员, Professor …
    "degree",  # 博士, PhD …
    "topic",  # a code from the call's topic list
    "money",  # a number in 万元
    "yesno",  # 是 / 否 / 无
    "date",
]


@dataclass(frozen=True)
class FieldSpec:
    name: str
    kind: FieldKind
    labels: tuple[str, ...]
    required: bool = False


@dataclass(frozen=True)
class Topic:
    code: str
    name: str
    direction: str = ""


@dataclass(frozen=True)
class FormSpec:
    call_id: str
    fields: tuple[FieldSpec, ...]
    topics: tuple[Topic, ...] = ()
    # groups of which at least one field must have a value (a contact: email or phone)
    required_one_of: tuple[tuple[str, ...], ...] = ()

    def field(self, name: str) -> FieldSpec:
        for spec in self.fields:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def missing(self, values: Mapping[str, object]) -> tuple[str, ...]:
        """Required fields without a value; a group of which none is given is listed whole."""
        absent = {name for name, value in values.items() if value is None or value == ""}
        absent |= {spec.name for spec in self.fields if spec.name not in values}
        missing = [spec.name for spec in self.fields if spec.required and spec.name in absent]
        for group in self.required_one_of:
            if all(name in absent for name in group):
                missing.extend(name for name in group if name not in missing)
        return tuple(missing)
