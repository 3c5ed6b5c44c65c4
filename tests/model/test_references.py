"""Reference words: what the model points at renders verbatim, and nothing it did not get is ever said."""

from __future__ import annotations

import pytest
from hypothesis import given, seed, settings
from hypothesis import strategies as st

from microturn.model.references import MAX_WORDS, REF, ReferenceBook, bg_ref, render_value, tool_ref, words_ref

values = st.one_of(
    st.integers(-10**9, 10**9),
    st.floats(-1e6, 1e6, allow_nan=False),
    st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF, exclude_characters=REF), max_size=30),
)
words = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=12)


@seed(13)
@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), values), min_size=1, max_size=40), st.data())
def test_a_tool_reference_renders_the_value_it_points_at(results, data) -> None:
    book = ReferenceBook(keep=8)
    for ok, value in results:
        book.add_tool(ok, value)
    n = data.draw(st.integers(1, len(results)))
    ok, value = results[n - 1]
    text, missing = book.resolve(f"That makes {tool_ref(n)}.")
    kept = ok and n > len(results) - 8
    expected = " ".join(f"That makes {render_value(value)}.".split()) if kept else "That makes ."
    assert (text, missing) == (expected, [] if kept else [f"T{n}"])
    assert REF not in text
    latest_ok, latest = results[-1]
    assert book.resolve(tool_ref())[0] == (" ".join(render_value(latest).split()) if latest_ok else "")


@seed(13)
@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["final", "progress", "failed"]), st.lists(words, min_size=1, max_size=8)),
                min_size=1, max_size=20))
def test_a_background_reference_counts_only_final_results(updates) -> None:
    book = ReferenceBook()
    finals = []
    for status, text in updates:
        book.add_background(status, " ".join(text))
        if status == "final":
            finals.append(" ".join(text))
    for n, text in enumerate(finals, 1):
        assert book.resolve(bg_ref(n)) == (text, [])
    assert book.resolve(bg_ref(len(finals) + 1)) == ("", [f"B{len(finals) + 1}"])
    assert book.resolve(bg_ref())[0] == (finals[-1] if finals else "")


@seed(13)
@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_no_control_byte_is_ever_spoken_and_plain_text_is_untouched(text) -> None:
    book = ReferenceBook()
    book.add_tool(True, 84)
    rendered, missing = book.resolve(text)
    assert REF not in rendered
    if REF not in text:
        assert (rendered, missing) == (text, [])


def test_values_render_as_a_voice_says_them() -> None:
    assert [render_value(v) for v in (8.2345, 84, "Paris", True, {"a": 1})] == ["8.2", "84", "Paris", "yes", '{"a":1}']


def test_a_book_is_bounded() -> None:
    book = ReferenceBook(keep=2)
    for v in range(5):
        book.add_tool(True, v)
    assert list(book.tools) == [4, 5]
    with pytest.raises(ValueError, match="keep: expected 1..4096, got 0"):
        ReferenceBook(keep=0)


@seed(13)
@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(words, max_size=6), min_size=1, max_size=12), st.data())
def test_a_goal_by_reference_renders_exactly_the_words_it_points_at(chunks, data) -> None:
    book = ReferenceBook()
    for chunk in chunks:
        book.add_user(" ".join(chunk))
    fed = [w for chunk in chunks for w in chunk]
    if not fed:
        assert words_ref(fed, ["x"]) is None
        return
    i = data.draw(st.integers(0, len(fed) - 1))
    j = data.draw(st.integers(i + 1, len(fed)))
    ref = words_ref(fed, fed[i:j])
    assert ref is not None and book.resolve(ref) == (" ".join(fed[i:j]), [])
    assert words_ref(fed, [*fed[i:j], "\x02never"]) is None  # not what was fed: spelled, never pointed at
    assert book.resolve(f"{REF}U{len(fed) + 1}-{len(fed) + 2}") == ("", [f"U{len(fed) + 1}-{len(fed) + 2}"])


def test_old_user_words_are_dropped_from_a_bounded_book() -> None:
    book = ReferenceBook()
    for n in range(MAX_WORDS + 10):
        book.add_user(f"w{n}")
    assert len(book.words) == MAX_WORDS and book.resolve(f"{REF}U1-2")[0] == ""
    assert book.resolve(f"{REF}L2")[0] == f"w{MAX_WORDS + 8} w{MAX_WORDS + 9}"
    fed, offset = book.words, book.n_words - len(book.words)
    assert words_ref(fed[:-1], [f"w{MAX_WORDS + 5}"], offset) == f"{REF}U{MAX_WORDS + 6}-{MAX_WORDS + 6}"
