"""KFL text in: the tokenizer, the parser, KFL v1 translation, the checker's errors, and the limits."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wiretide.common.kfl import KflError, parse_query, validate
from wiretide.common.kfl.ast import Binary, Call, Literal, Logical, Unary
from wiretide.common.kfl.errors import render_caret
from wiretide.common.kfl.lexer import tokenize
from wiretide.common.kfl.parser import MAX_DEPTH, MAX_QUERY_LENGTH, parse


def error_of(text: str) -> KflError:
    with pytest.raises(KflError) as info:
        parse_query(text)
    return info.value


# --- literals ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("42", "int", 42),
        ("0x1F", "int", 31),
        ("7u", "uint", 7),
        ("1.5", "double", 1.5),
        ("2e3", "double", 2000.0),
        (".5", "double", 0.5),
        ('"a\\tb"', "string", "a\tb"),
        ("'single'", "string", "single"),
        ('"\\u00e9\\x41\\101"', "string", "éAA"),
        ('r"\\d+"', "string", "\\d+"),
        ('R"\\n"', "string", "\\n"),
        ('"""tri"ple"""', "string", 'tri"ple'),
        ('b"\\xff\\x00"', "bytes", b"\xff\x00"),
        ('b"é"', "bytes", "é".encode()),
        ('rb"\\x"', "bytes", b"\\x"),
    ],
)
def test_literals_decode_to_their_values(text: str, kind: str, value: object) -> None:
    token = tokenize(text)[0]
    assert (token.kind, token.value) == (kind, value)


def test_raw_strings_are_marked_so_v1_comparisons_can_read_them_as_regexes() -> None:
    assert tokenize('r"x"')[0].raw is True
    assert tokenize('"x"')[0].raw is False


def test_comments_and_whitespace_are_skipped() -> None:
    tree, _ = parse("http // only HTTP\n && status_code == 500")
    assert isinstance(tree, Logical)


# --- grammar -----------------------------------------------------------------------------------------


def test_and_binds_tighter_than_or_and_chains_are_flat() -> None:
    tree, _ = parse("a || b && c || d")
    assert isinstance(tree, Logical) and tree.op == "||"
    assert len(tree.operands) == 3
    assert isinstance(tree.operands[1], Logical) and tree.operands[1].op == "&&"


def test_arithmetic_is_left_associative_with_the_usual_precedence() -> None:
    tree, _ = parse("1 - 2 - 3 * 4")
    assert isinstance(tree, Binary) and tree.op == "-"
    assert isinstance(tree.left, Binary) and tree.left.op == "-"
    assert isinstance(tree.right, Binary) and tree.right.op == "*"


def test_negative_number_literals_fold_and_the_int64_minimum_is_reachable() -> None:
    tree, _ = parse("-9223372036854775808")
    assert tree == Literal(-(2**63), 0)


def test_an_empty_query_matches_everything() -> None:
    assert parse("")[0] == Literal(True, 0)
    assert parse("   // nothing\n")[0] == Literal(True, 0)


def test_trailing_commas_are_allowed_in_lists_and_maps() -> None:
    parse_query('method in ["GET", "HEAD",]')
    parse_query('{"a": 1,}["a"] == 1')


# --- KFL v1 ------------------------------------------------------------------------------------------


def test_v1_words_and_single_equals_become_cel_with_warnings() -> None:
    tree, warnings = parse("http and not dns or tcp")
    assert isinstance(tree, Logical) and tree.op == "||"
    assert [w.message for w in warnings] == [
        "KFL v1 'and' read as '&&'",
        "KFL v1 'not' read as '!'",
        "KFL v1 'or' read as '||'",
    ]
    tree, warnings = parse("status_code = 500")
    assert isinstance(tree, Binary) and tree.op == "=="
    assert warnings[0].position == 12


def test_v1_regex_comparison_becomes_an_anchored_match() -> None:
    tree, warnings = parse('response.status == r"4.*"')
    assert isinstance(tree, Call) and tree.function == "matches"
    assert tree.args[0] == Literal("^(?:4.*)$", 19)
    assert warnings and warnings[0].severity == "warning"
    negated, _ = parse('path != r"/health.*"')
    assert isinstance(negated, Unary) and negated.op == "!"


def test_validate_reports_v1_spellings_as_warnings_and_a_good_query_as_nothing() -> None:
    assert validate("http && status_code >= 500") == []
    problems = validate("http and status_code >= 500")
    assert [p.severity for p in problems] == ["warning"]
    assert problems[0].position == 5


# --- errors ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "position", "fragment"),
    [
        ("http &&", 7, "expected a value"),
        ("(status_code == 5", 17, "expected ')'"),
        ("status_code 500", 12, "after a complete expression"),
        ('path == "abc', 8, "not closed"),
        ("path == 'a\n'", 8, "not closed"),
        ("status_code @ 5", 12, "unexpected character"),
        ("http & dns", 5, "not an operator"),
        ("12abc == 1", 0, "run into letters"),
        ("99999999999999999999 == 1", 0, "out of range"),
        ('"\\q"', 1, "unknown escape"),
        ('"\\u12"', 1, "4 hex digits"),
        ('"\\ud800"', 1, "Unicode"),
        ("x.", 2, "field or method name"),
        ("if == 1", 0, "reserved word"),
        ("staus_code == 5", 0, "unknown variable"),
        ('status_code == "500"', 12, "cannot compare"),
        ("status_code", 0, "true or false"),
        ("path.startsWith(5)", 16, "works on strings"),
        ('path.frobnicate("x")', 5, "unknown function"),
        ("size()", 0, "takes 1 argument"),
        ('timestamp("yesterday") < now()', 10, "not a timestamp"),
        ('elapsed_time > duration("fast")', 24, "not a duration"),
        ('path.matches("[")', 13, "invalid regex"),
        ('path.matches("(a+)+$")', 13, "nested quantifier"),
        ("http && 5", 8, "true or false"),
        ('status_code in "abc"', 15, "list or a map"),
        ("timestamp > 5", 10, "cannot order"),
        ("has(http)", 4, "always defined"),
        ("has(1)", 0, "one field"),
        ("[1].exists(1, true)", 4, "variable name"),
        ("dns_answers.exists(path, true)", 19, "already names"),
        ('"a" - 1', 4, "does not apply"),
        ("!status_code", 0, "needs true or false"),
        ("status_code.name == 1", 12, "has no field"),
    ],
)
def test_bad_queries_raise_kfl_error_at_the_right_place(text: str, position: int, fragment: str) -> None:
    error = error_of(text)
    assert fragment in error.message
    assert error.position == position
    assert error.hint  # every error tells the user what to do
    assert validate(text)[0].to_dict()["position"] == position


def test_unknown_names_suggest_the_closest_variable() -> None:
    assert "status_code" in error_of("status_cod >= 500").hint
    assert "startsWith" in error_of('path.startswith("/")').hint


def test_the_caret_rendering_points_at_the_problem_on_its_line() -> None:
    text = 'http &&\n  status_code == "5"'
    rendered = error_of(text).render(text)
    lines = rendered.splitlines()
    assert lines[0] == "error: cannot compare an int with a string"
    assert lines[1] == '  2 |   status_code == "5"'
    assert lines[2].index("^") - lines[1].index("|") == lines[1].index("==") - lines[1].index("|")
    assert lines[3].startswith("hint: ")


def test_render_caret_handles_the_end_of_the_text() -> None:
    assert render_caret("ab", 2, "m").splitlines()[2] == "    |   ^"


# --- limits ------------------------------------------------------------------------------------------


def test_a_query_longer_than_the_limit_is_refused_before_parsing() -> None:
    error = error_of("a" * (MAX_QUERY_LENGTH + 1))
    assert "longer than" in error.message


@pytest.mark.parametrize(
    "text",
    [
        "(" * (MAX_DEPTH + 1) + "http" + ")" * (MAX_DEPTH + 1),
        "!" * (MAX_DEPTH + 1) + "http",
        "1" + " + 1" * (MAX_DEPTH + 1) + " == 2",
        "request" + ".a" * (MAX_DEPTH + 1) + ' == "x"',
        "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1) + " == []",
        "x" + "[0]" * (MAX_DEPTH + 1),
        "http ? true : " * (MAX_DEPTH + 1) + "false",
    ],
)
def test_deep_nesting_is_refused_with_a_position(text: str) -> None:
    error = error_of(text)
    assert "deeper than" in error.message
    assert 0 < error.position < len(text)


def test_a_long_flat_chain_of_alternatives_is_fine() -> None:
    text = " || ".join(f'path == "/p{i}"' for i in range(500))
    assert isinstance(parse_query(text).tree, Logical)


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=60))
def test_any_text_either_parses_or_raises_kfl_error(text: str) -> None:
    try:
        parse_query(text)
    except KflError as error:
        assert 0 <= error.position <= len(text)
        assert error.render(text).startswith("error: ")


_PIECES = st.sampled_from(
    [
        "http",
        "status_code",
        "path",
        "&&",
        "||",
        "!",
        "(",
        ")",
        "[",
        "]",
        "{",
        "}",
        ",",
        ":",
        "?",
        ".",
        "==",
        "<",
        "in",
        '"x"',
        "1",
        "2.5",
        "null",
        "true",
        "size",
        "contains",
        "exists",
        "has",
        "-",
        "+",
        "dns_questions",
        "request",
        "headers",
        "map_get",
        "duration",
        '"5m"',
        "and",
        "or",
        "not",
        "=",
        'r"a.*"',
        "timestamp",
        "now",
        "x",
        "/",
        "%",
    ]
)


@settings(max_examples=600, deadline=None)
@given(st.lists(_PIECES, max_size=14))
def test_any_sequence_of_kfl_tokens_either_parses_or_raises_kfl_error(pieces: list[str]) -> None:
    text = " ".join(pieces)
    try:
        parse_query(text)
    except KflError as error:
        assert 0 <= error.position <= len(text)
