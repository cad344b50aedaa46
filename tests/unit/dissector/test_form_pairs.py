"""Query strings read as `urllib.parse.parse_qs(qs, keep_blank_values=True)` reads them (HTTP/2's
`query`), without its cost where there is nothing to unescape; HTTP/1 keeps the first MAX_HEADERS."""

from __future__ import annotations

from urllib.parse import parse_qs

from hypothesis import given
from hypothesis import strategies as st

from wiretide.dissector.protocols._body import form_pairs

PIECES = st.sampled_from(
    ["a", "b", "=", "&", "%20", "%", "%zz", "+", "é", "%C3%A9", "", "x=y", "&&", "==", ";", "%2", "%2B", " "]
)


@given(st.lists(PIECES, max_size=30).map("".join))
def test_pairs_are_what_parse_qs_reads(qs: str) -> None:
    assert form_pairs(qs, -1) == parse_qs(qs, keep_blank_values=True, max_num_fields=None)


def test_a_limit_keeps_the_first_pairs() -> None:
    qs = "&".join(f"k{i}=v{i}" for i in range(10)) + "&k0=again"
    assert list(form_pairs(qs, 3)) == ["k0", "k1", "k2"]
    assert form_pairs(qs, -1)["k0"] == ["v0", "again"]
    assert form_pairs("a=1&&b&c=%41+b", -1) == {"a": ["1"], "b": [""], "c": ["A b"]}
