"""The redactor on its own: escaped forms, rendering of any value, the bounded mask set."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import quote, quote_plus

import pytest
import yarl

from aftd import redact
from aftd.redact import MASK, Redactor, scrub_value
from aftd.secrets.chain import SecretChain
from aftd.secrets.config import SecretsConfig

# Backslash, both quotes, non-ASCII (Latin-1 and beyond the BMP), URL-special characters.
HOSTILE = [
    'back\\slash"dq\'sq-€ü😀/+=&?# x',
    'only\\back\\slash-Ωmega',
    "single'quote-only-ä",
    'double"quote-only',
    "plain-ascii-token-0123456789",
    "Zx9-very-secret/Token+value==",
]


def escaped_renderings(s: str) -> list[str]:
    """How a script or a library may show ``s``: one text per rendering."""
    url = yarl.URL.build(scheme="https", user="u", password=s, host="h.example", path="/" + s,
                         query={"t": s}, fragment=s)
    return [
        s, repr(s), ascii(s), repr(s.encode()), json.dumps(s), json.dumps(s, ensure_ascii=False),
        quote(s), quote(s, safe=""), quote_plus(s), str(url),
        str(yarl.URL("https://h.example/x").with_query(t=s)), str(yarl.URL("https://h/") / s),
        str(KeyError(s)), str(ValueError(s.encode())), f"{ {'a': (s, [s])} }",
        "%r" % ({"nested": {"k": s}},),  # noqa: UP031 (what scripts write)
        json.dumps({"error": str(KeyError(s))}),
        repr([str(KeyError(s))]), f"prefix {s!r} suffix", f"x{s}y{s}z",
    ]


def raw_forms(s: str) -> list[str]:
    """Forms that must not survive scrubbing (the value and its usual escapes, unquoted)."""
    return [s, repr(s)[1:-1], json.dumps(s)[1:-1], quote(s, safe=""), quote_plus(s),
            repr(s.encode())[2:-1]]


@pytest.fixture
def fresh() -> Iterator[Redactor]:
    """The process-wide redactor, emptied before and after the test."""
    redact.REDACTOR.clear()
    yield redact.REDACTOR
    redact.REDACTOR.clear()


@pytest.mark.parametrize("secret", HOSTILE)
def test_every_escaped_rendering_is_masked(fresh: Redactor, secret: str) -> None:
    redact.register(secret)
    for text in escaped_renderings(secret):
        out = redact.scrub(text)
        assert MASK in out, (text, out)
        for form in raw_forms(secret):
            assert form not in out, (text, form, out)


def test_scrub_matches_a_naive_search_on_random_text(fresh: Redactor) -> None:
    rng = random.Random(7)
    alphabet = "ab\\'\"é€ /+="
    values = {"".join(rng.choice(alphabet) for _ in range(rng.randint(4, 7))) for _ in range(30)}
    for v in values:
        redact.register(v)
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        out = redact.scrub(text)
        # Whatever was masked, no registered value is left in the output...
        assert not any(v in out for v in values), (text, out)
        # ...and text without any value is returned as it was.
        if not any(f in text for v in values for f in redact.forms_of(v)):
            assert out == text


def test_overlapping_values_are_masked_whole(fresh: Redactor) -> None:
    redact.register("abcdef")
    redact.register("defghi")
    assert redact.scrub("xxabcdefghiyy") == f"xx{MASK}yy"
    assert redact.scrub("abcdefabcdef") == MASK


def test_multiline_value_is_masked_line_by_line(fresh: Redactor) -> None:
    key = "-----BEGIN KEY-----\nAAAAB3NzaC1yc2EAAAADAQAB\nQZx+/abcdefgh==\n-----END KEY-----\n"
    redact.register(key)
    assert "AAAAB3NzaC1yc2EAAAADAQAB" not in redact.scrub("line: AAAAB3NzaC1yc2EAAAADAQAB")
    assert "QZx+/abcdefgh==" not in redact.scrub(json.dumps({"k": key}))


def test_short_values_are_not_masked(fresh: Redactor) -> None:
    redact.register("abc")
    assert redact.scrub("abc abc") == "abc abc"


@dataclass
class Creds:
    user: str
    password: str


class Boom:
    def __str__(self) -> str:
        raise RuntimeError("no")


def test_scrub_value_renders_any_value_before_scrubbing(fresh: Redactor) -> None:
    s = HOSTILE[0]
    redact.register(s)
    value = {
        "exc": RuntimeError(s), "key_error": KeyError(s), "bytes": s.encode(),
        "bytearray": bytearray(s.encode()), "url": yarl.URL.build(scheme="https", user="u",
                                                                   password=s, host="h"),
        "tuple": ("a", s), "set": {s}, "dataclass": Creds("u", s),
        "nested": {"a": [{"b": (s,)}]}, s: "as a key", "broken": Boom(),
        "number": 12, "nan": float("nan"),
    }
    out = scrub_value(value)
    text = json.dumps(out, allow_nan=False)  # valid strict JSON
    for form in raw_forms(s):
        assert form not in text
    assert out["exc"] == f"RuntimeError: {MASK}"
    assert out["tuple"] == ["a", MASK]
    assert out["nested"] == {"a": [{"b": [MASK]}]}
    assert out[MASK] == "as a key"
    assert out["broken"] == "<unprintable Boom>"
    assert (out["number"], out["nan"]) == (12, "nan")


def test_a_secret_that_is_a_number_is_masked(fresh: Redactor) -> None:
    redact.register("83724619")
    assert scrub_value({"pin": 83724619, "other": 5}) == {"pin": MASK, "other": 5}


def test_truncation_happens_after_scrubbing(fresh: Redactor) -> None:
    s = "secret-value-0123456789"
    redact.register(s)
    # The value straddles the cut: cutting first would leave a prefix of it in clear.
    text = "x" * 90 + s + "y" * 100
    out = scrub_value(text, max_chars=100)
    assert s[:5] not in out
    assert out.startswith("x" * 90 + MASK)
    assert out.endswith("more chars]")


def test_deep_and_large_containers_are_bounded(fresh: Redactor) -> None:
    deep: list[object] = []
    cur = deep
    for _ in range(50):
        nxt: list[object] = []
        cur.append(nxt)
        cur = nxt
    assert json.dumps(scrub_value(deep))  # cut at a fixed depth, rendered as text there
    out = scrub_value(list(range(5000)))
    assert len(out) == 1001
    assert out[-1] == "…[4000 more items]"


# -- the bounded set -----------------------------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_values_unseen_for_max_age_are_dropped() -> None:
    clock = Clock()
    r = Redactor(max_age_s=100, max_values=10, clock=clock)
    r.register("old-value-1")
    r.register("kept-value-2")
    clock.now += 60
    r.register("kept-value-2")  # resolved again: its age starts over
    clock.now += 60
    assert r.scrub("old-value-1 kept-value-2") == f"old-value-1 {MASK}"
    assert len(r) == 1
    clock.now += 101
    assert r.scrub("kept-value-2") == "kept-value-2"
    assert len(r) == 0


def test_the_count_is_capped_least_recently_resolved_first() -> None:
    clock = Clock()
    r = Redactor(max_age_s=1e9, max_values=3, clock=clock)
    for i in range(3):
        r.register(f"value-{i}-abc")
        clock.now += 1
    r.register("value-0-abc")  # now the most recent
    r.register("value-3-abc")  # evicts value-1, the least recently resolved
    assert len(r) == 3
    assert r.scrub("value-0-abc value-1-abc value-2-abc value-3-abc") == \
        f"{MASK} value-1-abc {MASK} {MASK}"


def test_pinned_values_outlive_age_and_cap_until_released() -> None:
    clock = Clock()
    r = Redactor(max_age_s=10, max_values=2, clock=clock)
    r.register("vault-token-xyz", pin=True)
    r.register("a-value-1")
    r.register("b-value-2")
    clock.now += 100
    assert r.scrub("vault-token-xyz a-value-1") == f"{MASK} a-value-1"
    r.release("vault-token-xyz")
    clock.now += 5
    assert r.scrub("vault-token-xyz") == MASK  # released: ages from the release on
    clock.now += 11
    assert r.scrub("vault-token-xyz") == "vault-token-xyz"


def test_configure_applies_new_bounds_at_once() -> None:
    clock = Clock()
    r = Redactor(max_age_s=1e9, max_values=100, clock=clock)
    for i in range(20):
        r.register(f"many-values-{i:02d}")
    r.configure(max_age_s=1e9, max_values=5)
    assert len(r) == 5
    assert r.scrub("many-values-19") == MASK
    assert r.scrub("many-values-00") == "many-values-00"


async def test_chain_refreshes_a_value_at_every_resolution(
        fresh: Redactor, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cache hit counts as a resolution; a value left unresolved ages out."""
    clock = Clock()
    monkeypatch.setattr(fresh, "clock", clock)
    monkeypatch.setenv("AFTD_SECRET_ROTATING", "rotating-value-123")
    chain = SecretChain(SecretsConfig(order=("env",), cache_ttl_s=1e6, mask_ttl_s=100,
                                      mask_max_values=16))
    await chain.start()  # applies mask_ttl_s / mask_max_values
    try:
        await chain.get("rotating")
        for _ in range(5):
            clock.now += 60
            await chain.get("rotating")  # a cache hit every time
            assert redact.scrub("rotating-value-123") == MASK
        clock.now += 101
        assert redact.scrub("rotating-value-123") == "rotating-value-123"
    finally:
        await chain.aclose()
        redact.configure(max_age_s=redact.DEFAULT_MAX_AGE_S,
                         max_values=redact.DEFAULT_MAX_VALUES)
