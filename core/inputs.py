"""The base of every model that reads outside input (API request bodies, trainer configurations, dataset settings
a lead changes): what each of them refuses, whatever its fields.

pydantic's lax mode reads `true` as 1 for an int and as 1.0 for a float (bool is a subclass of int), so
`"epochs": true` trained one epoch and `"label_change_confidence": true` set a confidence of 1.0 without a word.
A flag where a number belongs is a client's mistake: it is refused, naming the field. Numbers written as strings
("5", "1e-5") are still read as numbers: YAML 1.1 reads `1e-5` (no dot) as a string, and trainer configurations
come from YAML files.
"""

from __future__ import annotations

import types
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError


def _members(annotation: Any) -> list[Any]:
    """The types an annotation admits: a union's members, an Annotated's type, else itself."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _members(get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        return [m for arg in get_args(annotation) for m in _members(arg)]
    return [annotation]


def _flag_for_a_number(value: Any, annotation: Any) -> bool | None:
    """The flag found where the annotation takes a number and no flag (also as a list's item or a mapping's
    value), else None."""
    members = _members(annotation)
    if isinstance(value, bool):
        return value if bool not in members and any(m in (int, float) for m in members) else None
    if isinstance(value, list | tuple | dict):
        containers = (dict,) if isinstance(value, dict) else (list, tuple, set, frozenset)
        item_types = [
            arg
            for m in members
            if get_origin(m) in containers
            for arg in (get_args(m)[-1:] if isinstance(value, dict) else get_args(m))
            if arg is not Ellipsis
        ]
        for item in value.values() if isinstance(value, dict) else value:
            for item_type in item_types:
                if (found := _flag_for_a_number(item, item_type)) is not None:
                    return found
    return None


class InputModel(BaseModel):
    """Refuses true/false where a field takes a number and not a flag (alone, in a list or as a mapping's value)."""

    @field_validator("*", mode="before")
    @classmethod
    def _no_flag_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name) if info.field_name is not None else None
        if field is not None and (found := _flag_for_a_number(value, field.annotation)) is not None:
            raise PydanticCustomError(
                "flag_for_a_number", "Input should be a number, not {flag}", {"flag": str(found).lower()}
            )
        return value
