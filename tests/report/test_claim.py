"""Claim answers are untrusted: every defect is refused with an error naming the field."""

from __future__ import annotations

import json
from typing import Any

import pytest

from aftd.errors import AftdError
from aftd.report.claim import MAX_CLAIM_BYTES, Claim, ClaimError, parse_claim, parse_claim_obj

GOOD = {"sourceVfs": "partner", "sourcePath": "/out/a.csv", "destVfs": "archive",
        "destDir": "/in"}


def test_valid_claim_and_extra_fields_ignored() -> None:
    claim = parse_claim(json.dumps({**GOOD, "priority": 3}))
    assert claim == Claim("partner", "/out/a.csv", "archive", "/in")
    assert parse_claim(json.dumps(GOOD).encode()) == claim


@pytest.mark.parametrize("field", ["sourceVfs", "sourcePath", "destVfs", "destDir"])
def test_missing_field_is_named(field: str) -> None:
    body = {k: v for k, v in GOOD.items() if k != field}
    with pytest.raises(ClaimError) as info:
        parse_claim(json.dumps(body))
    assert info.value.field == field
    assert f"{field}: is missing" in str(info.value)
    assert isinstance(info.value, AftdError)


@pytest.mark.parametrize(("value", "kind"), [
    (None, "null"), (3, "a number"), (True, "a boolean"), (["a"], "an array"),
    ({"a": 1}, "an object"),
])
@pytest.mark.parametrize("field", ["sourceVfs", "destDir"])
def test_wrong_type_is_named(field: str, value: Any, kind: str) -> None:
    with pytest.raises(ClaimError, match=f"{field}: must be a string, got {kind}"):
        parse_claim(json.dumps({**GOOD, field: value}))


@pytest.mark.parametrize(("value", "reason"), [
    ("", "must not be empty"), ("   ", "must not be empty"),
    ("a\x00b", "control characters"), ("a\nb", "control characters"),
    ("x" * 5000, "longer than"),
])
def test_bad_string_values(value: str, reason: str) -> None:
    with pytest.raises(ClaimError, match=f"sourcePath: .*{reason}"):
        parse_claim(json.dumps({**GOOD, "sourcePath": value}))


@pytest.mark.parametrize(("raw", "reason"), [
    ("", "not valid JSON"), ("{", "not valid JSON"), ("<html>oops</html>", "not valid JSON"),
    ("[1, 2]", "must be a JSON object, got an array"), ('"text"', "got a string"),
    ("null", "got null"), ("42", "got a number"), ("[" * 60_000, "not valid JSON"),
])
def test_not_an_object(raw: str, reason: str) -> None:
    with pytest.raises(ClaimError, match=reason):
        parse_claim(raw)


def test_non_utf8_and_oversized() -> None:
    with pytest.raises(ClaimError, match="UTF-8"):
        parse_claim(b"\xff\xfe{}")
    with pytest.raises(ClaimError, match="larger than"):
        parse_claim(b" " * (MAX_CLAIM_BYTES + 1))


def test_parse_obj_directly() -> None:
    assert parse_claim_obj(dict(GOOD)).dest_vfs == "archive"
    with pytest.raises(ClaimError, match="must be a JSON object"):
        parse_claim_obj(["x"])


def test_error_does_not_echo_the_body() -> None:
    with pytest.raises(ClaimError) as info:
        parse_claim('{"sourceVfs": "s3cr3t-value-in-body", ')
    assert "s3cr3t" not in str(info.value)
