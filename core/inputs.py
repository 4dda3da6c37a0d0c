"""The base of every model that reads outside input (API request bodies, trainer configurations, dataset settings
a lead changes): what each of them refuses, whatever its fields.

pydantic's lax mode reads `true` as 1 for an int and as 1.0 for a float (bool is a subclass of int), so
`"epochs": true` trained one epoch and `"reviews_required": true` set k = 1 without a word. A flag where a number
belongs is a client's mistake: it is refused, naming the field. Numbers written as strings ("5", "1e-5") are
still read as numbers: YAML 1.1 reads `1e-5` (no dot) as a string, and trainer configurations come from YAML
files.
"""

from __future__ import annotations

import collections.abc
import types
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

# The largest id a row can have (the databases' signed 64-bit integers): ids from outside (an API path or body, a
# command's argument) are bounded by it, refused naming where before a driver fails to send them.
MAX_ID = 2**63 - 1

_SEQUENCES = (list, set, frozenset, collections.abc.Sequence, collections.abc.Set, collections.abc.Collection)
_MAPPINGS = (dict, collections.abc.Mapping)


def _members(annotation: Any) -> list[Any]:
    """The types an annotation admits: a union's members, an Annotated's type, else itself."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _members(get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        return [m for arg in get_args(annotation) for m in _members(arg)]
    return [annotation]


def _a_number_only(members: list[Any]) -> bool:
    return bool not in members and any(m in (int, float) for m in members)


def _flag_for_a_number(value: Any, annotation: Any) -> bool | None:
    """The flag found where the annotation takes a number and no flag (also inside a list, a tuple or a
    mapping's values, at any depth), else None."""
    members = _members(annotation)
    if isinstance(value, bool):
        return value if _a_number_only(members) else None
    if not isinstance(value, list | tuple | set | frozenset | dict):
        return None
    for member in members:
        origin, args = get_origin(member), [a for a in get_args(member) if a is not Ellipsis]
        if not args:
            continue
        if isinstance(value, dict):
            if origin not in _MAPPINGS:
                continue
            pairs = [(item, args[-1]) for item in value.values()]
        elif origin is tuple and Ellipsis not in get_args(member):  # tuple[int, bool]: by position
            pairs = list(zip(value, args, strict=False))
        elif origin is tuple or origin in _SEQUENCES:
            item_members = _members(args[0])
            if _a_number_only(item_members):  # the common case (ids, seeds): one scan
                return next((item for item in value if isinstance(item, bool)), None)
            pairs = [(item, args[0]) for item in value]
        else:
            continue
        for item, item_type in pairs:
            if (found := _flag_for_a_number(item, item_type)) is not None:
                return found
    return None


def _a_flag_only(annotation: Any) -> bool:
    """Whether the annotation takes true or false and nothing else (or no value: None)."""
    members = _members(annotation)
    return bool in members and all(m in (bool, type(None)) for m in members)


class InputModel(BaseModel):
    """Refuses true/false where a field takes a number and not a flag (alone, or inside lists, tuples and
    mappings), and anything but true/false where a field takes a flag: pydantic's lax mode reads "off", "no",
    "0" and 0 as false and "yes" as true, so `"weighted": "off"` combined runs unweighted without a word, and a
    typo such as "ture" was the only word refused."""

    @field_validator("*", mode="before")
    @classmethod
    def _no_flag_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name) if info.field_name is not None else None
        if field is None:
            return value
        if (found := _flag_for_a_number(value, field.annotation)) is not None:
            raise PydanticCustomError(
                "flag_for_a_number", "Input should be a number, not {flag}", {"flag": str(found).lower()}
            )
        if value is not None and not isinstance(value, bool) and _a_flag_only(field.annotation):
            raise PydanticCustomError("word_for_a_flag", "Input should be true or false")
        return value


class RepeatedKey(ValueError):
    """A key given twice in one JSON object (json_object_once)."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def json_object_once(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """`json.loads`'s object_pairs_hook for input from outside (a JSON Lines import, an API request body): a JSON
    object whose keys are distinct, else RepeatedKey. Python's reader keeps the last of a key given twice, so
    {"text": "a", "text": "b"} silently imported "b" (about 2 µs a line more, measured)."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _value in pairs:
            if key in seen:
                raise RepeatedKey(key)
            seen.add(key)
    return obj
