"""The admin API's records, sans I/O: what a body may say, what the store keeps (never the key), a stored record
of another format version refused; and the file store's create, update and delete, each only where it applies."""

from __future__ import annotations

import json

import pytest

from proxy.admin import FileKeys, decode, parse_change
from proxy.admin._records import changed, new_record, shown
from proxy.errors import InvalidRequest
from proxy.limits import ClientKey, key_id

KEY = "mr-unit-0123456789abcdef"


def test_a_record_keeps_the_digest_not_the_key_and_gives_the_keys_file_limits() -> None:
    change = parse_change(b'{"name": "team", "rpm": 60, "budget": "$20/30d", "cache": true}', creating=True)
    record = new_record(KEY, change, 100.0)
    stored = record.encode()
    assert KEY not in stored and decode(stored) == record and record.id == key_id(KEY)
    limits = record.limits(ClientKey(tpm=500))  # the key_* defaults fill in what it leaves out
    assert (limits.label, limits.rpm, limits.tpm, limits.money, limits.budget_s, limits.cache, limits.usage) == (
        "team", 60, 500, 20_000_000, 30 * 86400, True, True)  # fmt: skip
    assert shown(limits, "admin", record)["budget"] == "$20/30d"
    back = changed(record, parse_change(b'{"rpm": null, "disabled": true}', creating=False), 200.0)
    assert back.fields == {"name": "team", "budget": "$20/30d", "cache": "on"} and back.disabled
    assert (back.created, back.updated) == (100.0, 200.0)


@pytest.mark.parametrize("raw", [
    b"", b"[]", b'{"v": 2, "id": "x"}', b'{"v": 1}',
    json.dumps({"v": 1, "id": "0" * 16, "digest": "1" * 64, "fields": {}, "disabled": False, "created": 0,
                "updated": 0}).encode(),  # its id is not its digest's
])  # fmt: skip
def test_a_stored_record_of_another_version_or_shape_is_refused(raw: bytes) -> None:
    assert decode(raw) is None


@pytest.mark.parametrize("body, creating, code", [
    (b"{", True, "invalid_json"), (b'"x"', True, "invalid_body"), (b"", False, "invalid_body"),
    (b'{"key": "x"}', False, "unknown_field"), (b'{"tpm": 1.5}', True, "invalid_field"),
    (b'{"disabled": "yes"}', True, "invalid_field"), (b'{"budget": "10/0d"}', True, "invalid_field"),
])  # fmt: skip
def test_a_body_that_is_wrong_is_refused_naming_what(body: bytes, creating: bool, code: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        parse_change(body, creating=creating)
    assert refused.value.status == 400 and refused.value.code == code


async def test_the_file_store_creates_only_new_ids_and_changes_only_existing_ones(tmp_path) -> None:
    store = FileKeys(str(tmp_path / "keys.json"))
    assert await store.version() == "none" and await store.load() == {}
    assert await store.write("a", '{"x": 1}', new=True)
    first = await store.version()
    assert not await store.write("a", '{"x": 2}', new=True) and not await store.write("b", "{}", new=False)
    assert await store.write("a", '{"x": 3}', new=False) and await store.version() != first
    assert json.loads((await store.load())["a"]) == {"x": 3}
    assert await store.delete("a") and not await store.delete("a") and await store.load() == {}
