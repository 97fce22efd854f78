"""The element-by-element reader of JSON arrays: whatever the pieces, the same elements."""

from __future__ import annotations

import json

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ntx.jsonstream import NotAnArrayOfObjects, ObjectArray

# Strings full of what a scanner could mistake for structure.
tricky_text = st.text(alphabet=st.sampled_from(list('ab"\\{}[],: \n\u00e9\u0000')), max_size=8)
finite = st.floats(allow_nan=False, allow_infinity=False)
json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | finite | tricky_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(tricky_text, inner, max_size=3),
    max_leaves=8,
)
json_object = st.dictionaries(tricky_text, json_value, max_size=4)


def read(data: bytes, cuts: list[int]) -> list[bytes]:
    """Feed `data` cut at `cuts`, then close."""
    reader = ObjectArray()
    elements: list[bytes] = []
    start = 0
    for cut in [*sorted(set(cuts)), len(data)]:
        elements += reader.feed(data[start:cut])
        start = cut
    reader.close()
    return elements


@given(
    objects=st.lists(json_object, max_size=6),
    indent=st.sampled_from([None, 1]),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=12),
)
def test_any_pieces_give_the_elements_in_order(
    objects: list[dict[str, object]], indent: int | None, cuts: list[int]
) -> None:
    data = json.dumps(objects, indent=indent, ensure_ascii=False).encode()
    cuts = [cut for cut in cuts if cut <= len(data)]
    elements = read(data, cuts)
    assert [msgspec.json.decode(element) for element in elements] == objects


def test_elements_come_out_as_soon_as_they_end() -> None:
    reader = ObjectArray()
    assert reader.feed(b'[{"a": "}"}, {"b"') == [b'{"a": "}"}']
    assert reader.feed(b": [1, {}]}") == [b'{"b": [1, {}]}']
    assert reader.feed(b" ]  \n") == []
    reader.close()


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", "no JSON array"),
        (b'{"a": 1}', "expected a JSON array"),
        (b"[1, 2]", "expected an array of objects"),
        (b'["a"]', "expected an array of objects"),
        (b"[{}, ]", "expected an array of objects"),
        (b"[, {}]", "expected an array of objects"),
        (b"[{} {}]", "expected an array of objects"),
        (b"[{}] []", "data after the end of the array"),
        (b'[{"a": 1}', "the array ends early"),
        (b'[{"a": "]', "the array ends early"),
    ],
)
def test_what_is_not_an_array_of_objects_is_refused(data: bytes, error: str) -> None:
    reader = ObjectArray()
    with pytest.raises(NotAnArrayOfObjects, match=error):
        reader.feed(data)
        reader.close()


def test_an_empty_array_has_no_elements() -> None:
    assert read(b" [ ] ", [2]) == []
