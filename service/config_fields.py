"""Typed readers for the fields of a config.json document, so that no wrong type escapes as a bare error.

Each reader checks one JSON type and, on failure, raises a :class:`ConfigError` naming the model, the field's path
(``dynamic_batching.default_queue_policy.max_queue_size``), the expected type and the value given. A key the
document leaves out takes the default of the dataclass field it fills, so every default lives in
:mod:`service.config_model` alone.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Collection
from typing import Any

from service.config_model import ConfigError

_JSON_TYPES: dict[type, str] = {
    bool: "boolean",
    int: "integer",
    float: "number",
    str: "string",
    list: "list",
    tuple: "list",
    dict: "object",
    type(None): "null",
}
_SHOWN_CHARS = 60


def _shown(value: Any) -> str:
    """The value as the file spells it, cut short, with its JSON type: ``"many" (string)``."""
    text = json.dumps(value, default=repr)
    if len(text) > _SHOWN_CHARS:
        text = text[: _SHOWN_CHARS - 3] + "..."
    return f"{text} ({_JSON_TYPES.get(type(value), type(value).__name__)})"


def _is_int(value: Any) -> bool:
    # bool is a subclass of int, but `true` where a count is wanted is a mistake, not 1.
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return _is_int(value) or isinstance(value, float)


def _is_list(value: Any) -> bool:
    return isinstance(value, list | tuple)


def _is_text(value: Any) -> bool:
    return isinstance(value, str)


def _is_flag(value: Any) -> bool:
    return isinstance(value, bool)


def _is_object(value: Any) -> bool:
    return isinstance(value, dict)


def _int_within(minimum: int | None, maximum: int | None) -> Callable[[Any], bool]:
    return lambda v: _is_int(v) and (minimum is None or v >= minimum) and (maximum is None or v <= maximum)


def _list_of(accept_item: Callable[[Any], bool], length: int | None = None) -> Callable[[Any], bool]:
    return lambda v: _is_list(v) and (length is None or len(v) == length) and all(accept_item(x) for x in v)


def _within(minimum: int | None, maximum: int | None) -> str:
    """The bounds as a message states them: `` >= 1``, `` <= 16``, `` from 1 to 16``."""
    if minimum is not None and maximum is not None:
        return f" from {minimum} to {maximum}"
    if maximum is not None:
        return f" <= {maximum}"
    return "" if minimum is None else f" >= {minimum}"


class Fields:
    """One JSON object of a config.json document, read field by field.

    Args:
        raw: the decoded object; anything else is refused, naming ``path``.
        where: the start of every message, naming the document and the model (``config.json (model 'x')``).
        path: this object's path in the document: empty at the top, ``dynamic_batching`` or ``input[0]`` below.
        schema: the dataclass this object becomes; its field defaults fill the keys the document leaves out, and
            a key whose field has no default is required.
    """

    def __init__(self, raw: Any, where: str, path: str = "", schema: type | None = None) -> None:
        if not _is_object(raw):
            what = path or "the document"
            raise ConfigError(f"{where}: {what} is {_shown(raw)}, expected an object")
        self.raw = raw
        self.where = where
        self.path = path
        self.schema = schema

    def path_of(self, key: str) -> str:
        """The dotted path of ``key`` in the document, as messages name it."""
        return f"{self.path}.{key}" if self.path else key

    def error(self, key: str, problem: str) -> ConfigError:
        """A ConfigError about one field: ``<where>: <path> <problem>``."""
        return ConfigError(f"{self.where}: {self.path_of(key)} {problem}")

    def _default(self, key: str) -> Any:
        spec = {f.name: f for f in dataclasses.fields(self.schema)}.get(key) if self.schema else None
        if spec is not None and spec.default is not dataclasses.MISSING:
            return spec.default
        if spec is not None and spec.default_factory is not dataclasses.MISSING:
            return spec.default_factory()
        raise ConfigError(f"{self.where}: missing required field '{self.path_of(key)}'")

    def _read(self, key: str, expected: str, accept: Callable[[Any], bool]) -> Any:
        if key not in self.raw:
            return self._default(key)
        value = self.raw[key]
        if not accept(value):
            raise self.error(key, f"is {_shown(value)}, expected {expected}")
        return value

    def integer(self, key: str, minimum: int | None = None, maximum: int | None = None) -> int:
        """An integer field (``true`` is refused), within ``minimum``..``maximum`` when given."""
        return int(self._read(key, f"an integer{_within(minimum, maximum)}", _int_within(minimum, maximum)))

    def integers(
        self, key: str, minimum: int | None = None, length: int | None = None, maximum: int | None = None
    ) -> tuple[int, ...]:
        """A list of integers, each within ``minimum``..``maximum`` and ``length`` of them when given."""
        expected = f"a list of {'' if length is None else f'{length} '}integers{_within(minimum, maximum)}"
        return tuple(self._read(key, expected, _list_of(_int_within(minimum, maximum), length)))

    def numbers(self, key: str) -> tuple[float, ...]:
        """A list of numbers (integers or decimals), returned as floats."""
        return tuple(float(x) for x in self._read(key, "a list of numbers", _list_of(_is_number)))

    def text(self, key: str, choices: Collection[str] = ()) -> str:
        """A string field; one of ``choices`` when given."""
        expected = f"one of {', '.join(repr(c) for c in choices)}" if choices else "a string"
        return str(self._read(key, expected, lambda v: _is_text(v) and (not choices or v in choices)))

    def texts(self, key: str) -> tuple[str, ...]:
        """A list of strings."""
        return tuple(self._read(key, "a list of strings", _list_of(_is_text)))

    def flag(self, key: str) -> bool:
        """A boolean field (``0``/``1`` are refused: JSON has ``true`` and ``false``)."""
        return bool(self._read(key, "a boolean (true or false)", _is_flag))

    def json_object(self, key: str) -> dict[str, Any]:
        """A free-form object, returned as it is (the export report)."""
        return dict(self._read(key, "an object", _is_object))

    def child(self, key: str, schema: type) -> Fields:
        """A nested object that becomes ``schema``; a missing one reads as ``{}``, so all its defaults apply."""
        return Fields(self.raw.get(key, {}), self.where, self.path_of(key), schema)

    def optional_child(self, key: str, schema: type) -> Fields | None:
        """A nested object that may be left out or ``null`` (None then)."""
        return None if self.raw.get(key) is None else self.child(key, schema)

    def items(self, key: str, schema: type) -> list[Fields]:
        """A list of objects, each read as ``schema`` and named ``key[i]``."""
        entries = self._read(key, "a list of objects", _is_list)
        return [Fields(raw, self.where, f"{self.path_of(key)}[{i}]", schema) for i, raw in enumerate(entries)]

    def entries(self, key: str, schema: type) -> dict[str, Fields]:
        """An object of objects (``versions``), each read as ``schema`` and named ``key.<entry>``."""
        entries = self._read(key, "an object", _is_object)
        return {str(k): Fields(raw, self.where, f"{self.path_of(key)}.{k}", schema) for k, raw in entries.items()}
