"""Checks of one request field each, sans I/O, for the Messages and Responses validators: a wrong field is an
:class:`InvalidRequest` (400) whose message names it by its path (``messages.2.content.0.text``), as both
providers' own errors do."""

from __future__ import annotations

from typing import Any

from ._validate import InvalidRequest


def invalid(path: str, message: str) -> InvalidRequest:
    return InvalidRequest(f"{path}: {message}", "invalid_request_error")


def untranslatable(path: str, message: str) -> InvalidRequest:
    """A valid request that the chat-completions upstream cannot be asked (a 400, never a silent drop)."""
    return InvalidRequest(f"{path}: {message}", "untranslatable")


def is_int(value: Any) -> bool:
    return type(value) is int


def is_number(value: Any) -> bool:
    return type(value) is int or type(value) is float


def optional_number(data: dict[str, Any], key: str, low: float, high: float) -> None:
    value = data.get(key)
    if value is not None and (not is_number(value) or not low <= value <= high):
        raise invalid(key, f"must be a number from {low:g} to {high:g}.")


def optional_int(data: dict[str, Any], key: str, low: int) -> None:
    value = data.get(key)
    if value is not None and (not is_int(value) or value < low):
        raise invalid(key, f"must be an integer of at least {low}.")


def optional_bool(data: dict[str, Any], key: str) -> None:
    value = data.get(key)
    if value is not None and type(value) is not bool:
        raise invalid(key, "must be a boolean.")


def optional_str(data: dict[str, Any], key: str, path: str | None = None) -> None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise invalid(path or key, "must be a string.")


def optional_dict(data: dict[str, Any], key: str, path: str | None = None) -> dict[str, Any] | None:
    value = data.get(key)
    if value is not None and not isinstance(value, dict):
        raise invalid(path or key, "must be an object.")
    return value


def required_str(data: dict[str, Any], key: str, path: str) -> str:
    value = data.get(key)
    if value is None:
        raise invalid(path, "Field required.")
    if not isinstance(value, str):
        raise invalid(path, "must be a string.")
    return value


def string_list(data: dict[str, Any], key: str) -> list[str]:
    value = data.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise invalid(key, "must be a list of strings.")
    return value


def refuse_fields(data: dict[str, Any], allowed: frozenset[str], path: str, why: str) -> None:
    """An :func:`untranslatable` refusal for the first field of ``data`` outside ``allowed``."""
    for key in data:
        if key not in allowed:
            raise untranslatable(f"{path}.{key}" if path else key, why)
