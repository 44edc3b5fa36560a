"""Readers on small hand-written files: every format, every quirk, every error's location."""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vee_jax.data import (DataError, MissingDataFile, Sentence, collect_labels, holdout_split,
                          read_conll, read_json, read_msra, read_split)
from vee_jax.data.check import main as check_main


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    p = tmp_path / name
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text, encoding="utf-8", newline="")
    return p


# --------------------------------------------------------------------------------------------
# Sentence

def test_sentence_sorts_and_deduplicates_spans():
    s = Sentence(("a", "b", "c"), ((2, 2, "X"), (0, 1, "Y"), (2, 2, "X"), (0, 0, "Y")))
    assert s.spans == ((0, 0, "Y"), (0, 1, "Y"), (2, 2, "X"))
    assert s == Sentence(("a", "b", "c"), ((0, 0, "Y"), (2, 2, "X"), (0, 1, "Y")))


@pytest.mark.parametrize("span", [(2, 1, "X"), (0, 3, "X"), (-1, 0, "X")])
def test_sentence_rejects_cells_outside_the_table(span):
    with pytest.raises(ValueError):
        Sentence(("a", "b", "c"), (span,))


def test_data_error_message_and_pickle():
    err = DataError("data/train.json", "span [5, 3] ends before it starts", record=12)
    assert str(err) == "data/train.json: record 12: span [5, 3] ends before it starts"
    assert str(DataError("f.txt", "bad", line=3)) == "f.txt: line 3: bad"
    again = pickle.loads(pickle.dumps(DataError("f.txt", "bad", line=3, column=4)))
    assert str(again) == "f.txt: line 3, column 4: bad" and again.line == 3


# --------------------------------------------------------------------------------------------
# JSON (W2NER / GENIA)

GENIA_LIKE = [
    {"sentence": ["IL-2", "gene", "expression", "and", "NF-kappa", "B"],
     "ner": [{"index": [0, 1], "type": "DNA"}, {"index": [0], "type": "protein"},
             {"index": [4, 5], "type": "protein"}]},
    {"sentence": [], "ner": []},
    {"sentence": ["No", "entity", "here", "."], "ner": []},
    {"sentence": ["CD28", "surface", "receptor"],
     "ner": [{"index": [0, 1, 2], "type": "protein"}, {"index": [0], "type": "protein"},
             {"index": [0], "type": "protein"}], "extra": 1},
]


def test_json_nested_empty_and_entity_free_sentences(tmp_path):
    p = write(tmp_path, "g.json", json.dumps(GENIA_LIKE))
    got = read_json(p)
    assert [s.words for s in got] == [tuple(r["sentence"]) for r in GENIA_LIKE]
    assert got[0].spans == ((0, 0, "protein"), (0, 1, "DNA"), (4, 5, "protein"))  # nested
    assert got[1] == Sentence((), ())
    assert got[2].spans == ()
    # the duplicated entity is kept once
    assert got[3].spans == ((0, 0, "protein"), (0, 2, "protein"))
    assert collect_labels(got) == ["DNA", "protein"]


def test_json_lines_and_pretty_printed_array_read_the_same(tmp_path):
    a = read_json(write(tmp_path, "a.json", json.dumps(GENIA_LIKE)))
    b = read_json(write(tmp_path, "b.jsonl", "\n".join(json.dumps(r) for r in GENIA_LIKE) + "\n"))
    c = read_json(write(tmp_path, "c.json", json.dumps(GENIA_LIKE, indent=2)))
    d = read_json(write(tmp_path, "d.json", "\ufeff" + json.dumps(GENIA_LIKE)))  # BOM
    assert a == b == c == d
    assert read_json(write(tmp_path, "e.json", " [ ] \n")) == []


def _records_text(bad: dict) -> str:
    """Three records, one per line, the bad one third (record 2, line 4)."""
    recs = [GENIA_LIKE[0], GENIA_LIKE[2], bad]
    return "[\n" + ",\n".join(json.dumps(r) for r in recs) + "\n]\n"


@pytest.mark.parametrize("bad, words", [
    ({"ner": []}, "no 'sentence'"),
    ({"sentence": ["a"]}, "no 'ner'"),
    ({"sentence": ["a", "b"], "ner": [{"index": [1, 2], "type": "X"}]}, "out of range"),
    ({"sentence": ["a", "b"], "ner": [{"index": [-1], "type": "X"}]}, "out of range"),
    ({"sentence": ["a", "b"], "ner": [{"index": [], "type": "X"}]}, "empty 'index'"),
    ({"sentence": ["a", "b", "c"], "ner": [{"index": [0, 2], "type": "X"}]}, "not contiguous"),
    ({"sentence": ["a", "b", "c"], "ner": [{"index": [2, 1], "type": "X"}]}, "[2, 1] ends before it starts"),
    ({"sentence": ["a", "b", "c"], "ner": [{"index": [0, 2, 1], "type": "X"}]}, "not in ascending order"),
    ({"sentence": ["a"], "ner": [{"index": [0]}]}, "'index' and 'type'"),
    ({"sentence": ["a"], "ner": [{"index": ["0"], "type": "X"}]}, "list of integers"),
    ({"sentence": "a b", "ner": []}, "list of strings"),
])
def test_json_record_errors_name_file_record_and_line(tmp_path, bad, words):
    p = write(tmp_path, "bad.json", _records_text(bad))
    with pytest.raises(DataError) as info:
        read_json(p)
    msg = str(info.value)
    assert msg.startswith(f"{p}: record 2 (line 4, column 1): ")
    assert words in msg
    assert info.value.record == 2 and info.value.line == 4


def test_json_syntax_error_gives_json_line_and_column(tmp_path):
    text = '[\n{"sentence": ["a"], "ner": []},\n{"sentence": ["b"] "ner": []}\n]'
    p = write(tmp_path, "syntax.json", text)
    with pytest.raises(DataError) as info:
        read_json(p)
    msg = str(info.value)
    # the position json.loads reports for the whole text: the unexpected "ner"
    with pytest.raises(json.JSONDecodeError) as ref:
        json.loads(text)
    assert (ref.value.lineno, ref.value.colno) == (3, 20)
    assert msg == f"{p}: record 1 (line 3, column 20): invalid JSON: {ref.value.msg}"


@pytest.mark.parametrize("text, where", [
    ('[{"sentence": [], "ner": []}', "record 1 (line 1, column 29)"),       # unclosed array
    ('[{"sentence": [], "ner": []}] x', "record 1 (line 1, column 31)"),    # trailing data
    ('[{"sentence": [], "ner": []};', "record 1 (line 1, column 29)"),      # bad separator
])
def test_json_array_structure_errors(tmp_path, text, where):
    p = write(tmp_path, "s.json", text)
    with pytest.raises(DataError, match="invalid JSON") as info:
        read_json(p)
    assert str(info.value).startswith(f"{p}: {where}: ")


@pytest.mark.parametrize("text", ["", "  \n\n"])
def test_json_empty_file(tmp_path, text):
    p = write(tmp_path, "empty.json", text)
    with pytest.raises(DataError, match="empty file") as info:
        read_json(p)
    assert str(info.value).startswith(str(p))


@pytest.mark.parametrize("reader, name", [(read_json, "x.json"), (read_conll, "x.conll"),
                                          (read_msra, "x.txt")])
def test_non_utf8_names_line_and_byte_offset(tmp_path, reader, name):
    data = b'[{"sentence": ["a"],\n "ner": []},\n{"sentence": ["\xff"], "ner": []}]'
    p = write(tmp_path, name, data)
    with pytest.raises(DataError) as info:
        reader(p)
    msg = str(info.value)
    offset = data.index(b"\xff")
    assert msg.startswith(f"{p}: line 3, column 16: not valid UTF-8")
    assert f"byte offset {offset}" in msg and "0xff" in msg


# --------------------------------------------------------------------------------------------
# CoNLL

CONLL_IOB1 = """\
-DOCSTART- -X- O O

EU NNP I-NP I-ORG
rejects VBZ I-VP O
German JJ I-NP I-MISC
Dutch JJ I-NP B-MISC
call NN I-NP I-MISC
Peter NNP I-NP I-PER
Blackburn NNP I-NP I-PER
. . O O

Only O O O

-DOCSTART- -X- O O
Mr NNP I-NP B-PER
Smith NNP I-NP I-PER
in IN I-PP O
Paris NNP I-NP I-LOC
Moscow NNP I-NP I-ORG

-DOCSTART- -X- O O"""  # final marker without a newline, as in eng.train


def test_conll_iob1_rules_and_docstart_at_both_ends(tmp_path):
    p = write(tmp_path, "eng.train", CONLL_IOB1)
    stats: dict[str, int] = {}
    got = read_conll(p, stats=stats)
    assert got == [
        Sentence(("EU", "rejects", "German", "Dutch", "call", "Peter", "Blackburn", "."),
                 # I- after O starts ORG; B-MISC after MISC starts a second MISC, which the
                 # next I-MISC continues; I-PER after I-MISC starts a PER.
                 ((0, 0, "ORG"), (2, 2, "MISC"), (3, 4, "MISC"), (5, 6, "PER")), doc_id="doc0"),
        Sentence(("Only",), (), doc_id="doc0"),
        # B- after a -DOCSTART- (no blank line) starts; I-LOC then I-ORG: two entities
        Sentence(("Mr", "Smith", "in", "Paris", "Moscow"),
                 ((0, 1, "PER"), (3, 3, "LOC"), (4, 4, "ORG")), doc_id="doc1"),
    ]
    assert stats == {"repairs": 0, "documents": 3, "lines": 21}


def test_conll_without_any_docstart_and_extra_blank_lines(tmp_path):
    p = write(tmp_path, "plain.conll", "\n\nA I-X\r\nB O\n\n\n\nC I-X\n  \n")
    assert read_conll(p) == [Sentence(("A", "B"), ((0, 0, "X"),)), Sentence(("C",), ((0, 0, "X"),))]


def test_conll_columns_and_tabs(tmp_path):
    p = write(tmp_path, "cols.tsv", "B-X\tNew\tx\nI-X\tYork\tx\nO\tis\tx\n")
    got = read_conll(p, scheme="bio", token_column=1, tag_column=0)
    assert got == [Sentence(("New", "York", "is"), ((0, 1, "X"),))]


BIO_BAD = "John B-PER\nsaid O\nhi I-MISC\nthere I-MISC\nMary I-PER\n\nok I-LOC\n"


def test_bio_stray_inside_tag_is_an_error(tmp_path):
    p = write(tmp_path, "bio.conll", BIO_BAD)
    with pytest.raises(DataError) as info:
        read_conll(p, scheme="bio")
    assert str(info.value).startswith(f"{p}: line 3: BIO tag I-MISC after O")
    # IOB1 reads the same file without complaint
    assert read_conll(p)[0].spans == ((0, 0, "PER"), (2, 3, "MISC"), (4, 4, "PER"))


def test_bio_lenient_repairs_and_counts(tmp_path):
    p = write(tmp_path, "bio.conll", BIO_BAD)
    stats: dict[str, int] = {}
    got = read_conll(p, scheme="bio", lenient=True, stats=stats)
    # line 3 (after O), line 5 (after another type), line 7 (sentence start): 3 repairs
    assert stats["repairs"] == 3
    assert got == [Sentence(("John", "said", "hi", "there", "Mary"),
                            ((0, 0, "PER"), (2, 3, "MISC"), (4, 4, "PER"))),
                   Sentence(("ok",), ((0, 0, "LOC"),))]


def test_bio_b_after_same_type_starts_new_entity(tmp_path):
    p = write(tmp_path, "bio.conll", "a B-X\nb B-X\nc I-X\n")
    assert read_conll(p, scheme="bio")[0].spans == ((0, 0, "X"), (1, 2, "X"))


@pytest.mark.parametrize("text, line, words", [
    ("a NN O\nb NN\n", 2, "2 columns, but this sentence's first line has 3"),
    ("a O\n\nb NN O\nc O\n", 4, "2 columns, but this sentence's first line has 3"),
    ("a O\nb E-PER\n", 2, "tag 'E-PER' is not O"),
    ("a O\nb B-\n", 2, "tag 'B-' is not O"),
    ("a O\nb i-PER\n", 2, "tag 'i-PER'"),
])
def test_conll_line_errors(tmp_path, text, line, words):
    p = write(tmp_path, "e.conll", text)
    with pytest.raises(DataError) as info:
        read_conll(p)
    assert str(info.value).startswith(f"{p}: line {line}: ")
    assert words in str(info.value)


def test_conll_too_few_columns_for_the_tag_column(tmp_path):
    p = write(tmp_path, "few.conll", "a NN O\n\nb O\n")
    with pytest.raises(DataError, match="too few for tag_column=2") as info:
        read_conll(p, tag_column=2)
    assert str(info.value).startswith(f"{p}: line 3: ")


def test_conll_bad_scheme():
    with pytest.raises(ValueError, match="scheme"):
        read_conll("whatever", scheme="bioes")


# --------------------------------------------------------------------------------------------
# MSRA

def test_msra_characters_and_adjacent_same_tag_segments(tmp_path):
    # a blank line between the sentences, and no newline at the end
    text = "台/ns 港/ns 两地/o 邓颖超/nr 出席/o \n\n中共中央/nt 致/o a/b/o \u3000x/o "
    got = read_msra(write(tmp_path, "train.txt", text))
    assert got[0] == Sentence(tuple("台港两地邓颖超出席"),
                              ((0, 0, "LOC"), (1, 1, "LOC"), (4, 6, "PER")))
    # split at the LAST '/'; the full-width space is a character, not a separator
    assert got[1] == Sentence(tuple("中共中央致a/b\u3000x"), ((0, 3, "ORG"),))
    assert len(got) == 2  # the blank line is no sentence


@pytest.mark.parametrize("item, words", [("北京", "not segment/tag"), ("/ns", "not segment/tag"),
                                         ("北京/LOC", "tag 'LOC' is not one of o, nr, ns, nt")])
def test_msra_bad_item_names_line(tmp_path, item, words):
    p = write(tmp_path, "m.txt", f"在/o 这里/o \n去/o {item} 了/o \n")
    with pytest.raises(DataError) as info:
        read_msra(p)
    assert str(info.value).startswith(f"{p}: line 2: ")
    assert words in str(info.value)


# --------------------------------------------------------------------------------------------
# read_split, holdout_split, check

def test_read_split_dispatches_and_names_missing_files(tmp_path):
    p = write(tmp_path, "x.conll", "a B-X\nb I-X\n")
    assert read_split(p, "conll", scheme="bio") == [Sentence(("a", "b"), ((0, 1, "X"),))]
    missing = tmp_path / "nope.json"
    with pytest.raises(MissingDataFile) as info:
        read_split(missing, "json")
    assert str(info.value).startswith(f"{missing}: no such file (expected json format")
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, DataError)
    with pytest.raises(DataError, match="no such file"):
        read_msra(tmp_path / "nope.txt")
    with pytest.raises(ValueError, match="unknown data format 'xml'"):
        read_split(p, "xml")


def test_holdout_split_is_seeded_disjoint_and_ordered():
    sents = [Sentence((f"w{i}",), ()) for i in range(50)]
    train, dev = holdout_split(sents, 0.2, seed=3)
    assert len(dev) == 10 and len(train) == 40
    assert sorted(train + dev, key=lambda s: int(s.words[0][1:])) == sents
    assert train == sorted(train, key=lambda s: int(s.words[0][1:]))  # file order kept
    assert holdout_split(sents, 0.2, seed=3) == (train, dev)
    assert holdout_split(sents, 0.2, seed=4)[1] != dev
    assert holdout_split(sents, 0.0, seed=0) == (sents, [])
    with pytest.raises(ValueError):
        holdout_split(sents, 1.5, seed=0)


def test_check_prints_counts_and_exits_2_on_bad_data(tmp_path, capsys):
    p = write(tmp_path, "g.json", json.dumps(GENIA_LIKE))
    assert check_main(["check", str(p), "--format", "json"]) == 0
    out = capsys.readouterr().out
    rows = dict(re.split(r" {2,}", line.strip(), maxsplit=1) for line in out.splitlines()
                if re.search(r"\S {2,}\S", line))
    assert rows["sentences"] == "4" and rows["words"] == "13"
    assert rows["empty sentences"] == "1" and rows["sentences without entities"] == "2"
    assert rows["entities"] == "5" and rows["DNA"] == "1 (20.0%)"
    # (0,0) inside (0,1) in record 0, (0,0) inside (0,2) in record 3
    assert rows["nested (contain or inside another)"] == "4"
    bad = write(tmp_path, "bad.conll", "a O\nb NN O\n")
    assert check_main(["check", str(bad), "--format", "conll"]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {bad}: line 2: 3 columns, but this sentence's first line has 2\n"


def test_check_accepts_what_iob1_and_lenient_bio_allow(tmp_path, capsys):
    """The stray I- that BIO refuses starts an entity under IOB1, and is a counted repair when lenient."""
    p = write(tmp_path, "t.conll", "EU B-ORG\nrejects O\nGerman I-MISC\n\nPeter B-PER\nBlackburn I-LOC\n")
    assert check_main(["check", str(p), "--format", "conll", "--backbone", "none"]) == 0
    assert _rows(capsys.readouterr().out)["entities"] == "4"
    assert check_main(["check", str(p), "--format", "conll", "--scheme", "bio", "--backbone", "none"]) == 2
    assert capsys.readouterr().err.startswith(f"error: {p}: line 3: BIO tag I-MISC after O")
    assert check_main(["check", str(p), "--format", "conll", "--scheme", "bio", "--lenient", "--backbone", "none"]) == 0
    rows = _rows(capsys.readouterr().out)
    assert rows["lenient BIO repairs"] == "2" and rows["entities"] == "4" and rows["LOC"] == "1 (25.0%)"


@pytest.mark.parametrize("reader, name", [(read_conll, "e.conll"), (read_msra, "e.txt")])
@pytest.mark.parametrize("text", ["", "\n \n\t\r\n"])
def test_empty_line_files_are_refused(tmp_path, reader, name, text):
    p = write(tmp_path, name, text)
    with pytest.raises(DataError, match=r"empty file \(expected (CoNLL|MSRA)") as info:
        reader(p)
    assert str(info.value).startswith(f"{p}: empty file")


def _rows(report: str) -> dict[str, str]:
    """The ``name  value`` rows of a check report."""
    return dict(re.split(r" {2,}", line.strip(), maxsplit=1) for line in report.splitlines()
                if re.search(r"\S {2,}\S", line))


# --------------------------------------------------------------------------------------------
# Round trips: random sentences written in each format and read back.

# No whitespace or control characters (column separators), and no U+FEFF, which the readers
# drop as a byte-order mark at the very start of a file.
WORD = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Zs", "Zl", "Zp", "Cc"),
                             exclude_characters="\ufeff"),
               min_size=1, max_size=5).filter(lambda w: not w.startswith("-DOCSTART-"))
TYPES = st.sampled_from(["PER", "LOC", "ORG", "B-X", "I"])


@st.composite
def flat_sentences(draw) -> Sentence:
    """Words and non-overlapping spans (any spans may touch)."""
    n = draw(st.integers(1, 12))
    spans, i = [], 0
    while i < n:
        if draw(st.booleans()):
            e = draw(st.integers(i, min(n - 1, i + 3)))
            spans.append((i, e, draw(TYPES)))
            i = e + 1
        else:
            i += 1
    return Sentence(tuple(draw(st.lists(WORD, min_size=n, max_size=n))), tuple(spans))


@st.composite
def nested_sentences(draw) -> Sentence:
    """Words (possibly none) and spans that never cross (nesting allowed)."""
    n = draw(st.integers(0, 10))
    spans: list[tuple[int, int, str]] = []
    for _ in range(draw(st.integers(0, 6)) if n else 0):
        s = draw(st.integers(0, n - 1))
        e = draw(st.integers(s, n - 1))
        if all(not (a < s <= b < e or s < a <= e < b) for a, b, _ in spans):
            spans.append((s, e, draw(TYPES)))
    return Sentence(tuple(draw(st.lists(WORD, min_size=n, max_size=n))), tuple(spans))


def to_bio(sent: Sentence) -> list[str]:
    tags = ["O"] * len(sent)
    for s, e, t in sent.spans:
        tags[s] = f"B-{t}"
        for k in range(s + 1, e + 1):
            tags[k] = f"I-{t}"
    return tags


def to_iob1(sent: Sentence) -> list[str]:
    tags = ["O"] * len(sent)
    prev_end, prev_type = -2, None
    for s, e, t in sent.spans:
        # B- only where an entity directly follows one of the same type (CoNLL-2003)
        first = "B" if (prev_end == s - 1 and prev_type == t) else "I"
        tags[s] = f"{first}-{t}"
        for k in range(s + 1, e + 1):
            tags[k] = f"I-{t}"
        prev_end, prev_type = e, t
    return tags


@settings(max_examples=60, deadline=None)
@given(st.lists(flat_sentences(), min_size=1, max_size=5), st.booleans())
def test_conll_round_trip(tmp_path_factory, sents, docstart):
    d = tmp_path_factory.mktemp("rt")
    for scheme, encode in (("bio", to_bio), ("iob1", to_iob1)):
        blocks = ["\n".join(f"{w} POS {t}" for w, t in zip(s.words, encode(s))) for s in sents]
        text = ("-DOCSTART- -X- O\n\n" if docstart else "") + "\n\n".join(blocks)
        p = d / f"{scheme}.conll"
        p.write_text(text, encoding="utf-8")
        assert read_conll(p, scheme=scheme) == [Sentence(s.words, s.spans, "doc0" if docstart else None) for s in sents]


@settings(max_examples=60, deadline=None)
@given(st.lists(nested_sentences(), min_size=1, max_size=5), st.booleans())
def test_json_round_trip(tmp_path_factory, sents, lines):
    recs = [{"sentence": list(s.words),
             "ner": [{"index": list(range(a, b + 1)), "type": t} for a, b, t in s.spans]}
            for s in sents]
    p = tmp_path_factory.mktemp("rt") / "x.json"
    text = "\n".join(json.dumps(r, ensure_ascii=False) for r in recs) if lines else json.dumps(recs)
    p.write_text(text, encoding="utf-8")
    assert read_json(p) == sents


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.tuples(WORD.filter(lambda w: " " not in w),
                                   st.sampled_from(["o", "nr", "ns", "nt"])),
                         min_size=1, max_size=6), min_size=1, max_size=4))
def test_msra_round_trip(tmp_path_factory, lines):
    expected = []
    for items in lines:
        chars, spans = "", []
        for seg, tag in items:
            if tag != "o":
                spans.append((len(chars), len(chars) + len(seg) - 1,
                              {"nr": "PER", "ns": "LOC", "nt": "ORG"}[tag]))
            chars += seg
        expected.append(Sentence(tuple(chars), tuple(spans)))
    p = tmp_path_factory.mktemp("rt") / "m.txt"
    p.write_text("".join(" ".join(f"{s}/{t}" for s, t in items) + " \n" for items in lines),
                 encoding="utf-8")
    assert read_msra(p) == expected


# --------------------------------------------------------------------------------------------
# The shipped splits against the counts in their READMEs (the small splits, to stay fast).

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _counts(sents: list[Sentence]) -> tuple[int, int, int, dict[str, int]]:
    types: dict[str, int] = {}
    for s in sents:
        for _, _, t in s.spans:
            types[t] = types.get(t, 0) + 1
    return len(sents), sum(len(s) for s in sents), sum(types.values()), types


@pytest.mark.parametrize("rel, fmt, expected", [
    ("genia/test.json", "json", (1854, 48179, 5506, {"DNA": 1262, "RNA": 109, "protein": 3084,
                                                     "cell_line": 445, "cell_type": 606})),
    ("conll2003/eng.testb", "conll", (3453, 46435, 5648, {"PER": 1617, "LOC": 1668,
                                                          "ORG": 1661, "MISC": 702})),
    ("msra/test_with_label.txt", "msra", (4365, 172601, 6181, {"LOC": 2877, "ORG": 1331,
                                                               "PER": 1973})),
])
def test_shipped_splits_match_their_readme(rel, fmt, expected):
    path = DATA / rel
    if not path.exists():
        pytest.skip(f"{path} not available")
    assert _counts(read_split(path, fmt)) == expected
