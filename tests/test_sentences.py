"""vee_jax.sentences: the sentence rules keep every character, split where they should, and the
GENIA rule scores what the study (bench/splitters.py, docs/sentences.md) reports."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import SHARED_DATA
from vee_jax.sentences import RULE_OF_FORMAT, RULES, align, split_sentences

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results" / "splitters" / "splitters.json"


def _load_bench():
    spec = importlib.util.spec_from_file_location("bench_splitters", ROOT / "bench" / "splitters.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def sentences(text: str, rule: str) -> list[str]:
    return [text[a:b] for a, b in split_sentences(text, rule)]


def assert_partition(text: str, spans: list[tuple[int, int]]) -> None:
    """Ordered, non-overlapping, trimmed, and every non-space character in exactly one span."""
    prev = 0
    for a, b in spans:
        assert prev <= a < b <= len(text), spans
        assert text[a:b] == text[a:b].strip(), (text[a:b], spans)
        prev = b
    covered = [i for a, b in spans for i in range(a, b) if not text[i].isspace()]
    assert covered == [i for i, c in enumerate(text) if not c.isspace()]


TEXTS = st.lists(st.sampled_from([*"ab AZ.!?,;:\"')(\n\t\r\u2028 e.g IL-2 。！？”中文 1", "e.g. ", "Dr. ", "U.S. "]),
                 max_size=60).map("".join)


@pytest.mark.parametrize("rule", RULES)
@settings(max_examples=150, deadline=None)
@given(text=TEXTS)
def test_spans_partition_the_text(rule, text):
    assert_partition(text, split_sentences(text, rule))


@settings(max_examples=200, deadline=None)
@given(text=TEXTS, pieces=st.lists(st.text(alphabet="ab. \nx", max_size=20), max_size=8))
def test_align_keeps_every_character_whatever_the_library_returns(text, pieces):
    assert_partition(text, align(text, pieces))


def test_align_follows_a_library_that_rewrote_a_character():
    text = "Cells grew. They died."
    assert align(text, ["Cells grew.", "Thay died."]) == [(0, 11), (12, 22)]
    assert align(text, ["Cells grew. They", "died."]) == [(0, 16), (17, 22)]


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("text", ["", " ", "\n\n \t", "\u2028 \r\n"])
def test_empty_or_blank_text_has_no_sentence(rule, text):
    assert split_sentences(text, rule) == []


def test_unknown_rule():
    with pytest.raises(ValueError, match="unknown sentence rule 'nltk'"):
        split_sentences("A b.", "nltk")


def test_pysbd_keeps_biomedical_abbreviations_and_ends_at_gene_names():
    text = ("Cytokines, e.g. IL-4 and IL-13, were added (see Fig. 2). Activated T cells secreted IL-2. "
            "This was blocked by cyclosporin A, i.e. by calcineurin inhibition, as reported by Kim et al. in 1995.")
    assert sentences(text, "pysbd") == [
        "Cytokines, e.g. IL-4 and IL-13, were added (see Fig. 2).",
        "Activated T cells secreted IL-2.",
        "This was blocked by cyclosporin A, i.e. by calcineurin inhibition, as reported by Kim et al. in 1995."]


def test_pysbd_keeps_decimals_and_reports_offsets_into_the_text():
    text = "  The Kd was 1.5 nM.   It rose 2.5-fold.\n"
    spans = split_sentences(text, "pysbd")
    assert [text[a:b] for a, b in spans] == ["The Kd was 1.5 nM.", "It rose 2.5-fold."]
    assert spans[0][0] == 2


NEWS = ("SOCCER - JAPAN GET LUCKY WIN , CHINA IN SURPRISE DEFEAT .\n"
        "Nadim Ladki\n"
        "AL-AIN , United Arab Emirates 1996-12-06\n"
        "\n"
        "Japan began the defence of their Asian Cup title with a win . China lost .\n")


def test_lines_keeps_a_headline_without_final_punctuation():
    assert sentences(NEWS, "lines") == [
        "SOCCER - JAPAN GET LUCKY WIN , CHINA IN SURPRISE DEFEAT .", "Nadim Ladki",
        "AL-AIN , United Arab Emirates 1996-12-06",
        "Japan began the defence of their Asian Cup title with a win . China lost ."]


def test_lines_plus_pysbd_splits_within_a_line_only():
    got = sentences(NEWS, "lines+pysbd")
    assert got[:3] == sentences(NEWS, "lines")[:3]
    assert got[3:] == ["Japan began the defence of their Asian Cup title with a win .", "China lost ."]


def test_zh_splits_after_sentence_marks_and_closing_quotes():
    text = "中共中央致贺词。各位代表！他说：“好！”大家笑了\n在大会召开之际"
    assert sentences(text, "zh") == ["中共中央致贺词。", "各位代表！", "他说：“好！”", "大家笑了", "在大会召开之际"]


def test_none_is_the_whole_text_trimmed():
    assert split_sentences("  One. Two.\nThree \n", "none") == [(2, 17)]


def test_every_format_has_a_rule():
    assert set(RULE_OF_FORMAT) == {"json", "conll", "msra", "hf"}
    assert set(RULE_OF_FORMAT.values()) <= set(RULES)


def test_import_does_not_load_the_splitting_library():
    code = "import sys, vee_jax.sentences; assert 'pysbd' not in sys.modules and 'spacy' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_docs_show_the_committed_results():
    bench = _load_bench()
    table = bench.markdown(json.loads(RESULTS.read_text()))
    docs = (ROOT / "docs" / "sentences.md").read_text()
    assert f"{bench.BEGIN}\n{table}\n{bench.END}" in docs, "rerun: python bench/splitters.py --docs docs/sentences.md"


@pytest.mark.skipif(not (SHARED_DATA / "genia" / "test.doc_ids.txt").exists(),
                    reason="needs ../shared/data/genia (the development data)")
def test_genia_rule_reaches_the_reported_boundary_f1_on_20_abstracts():
    bench = _load_bench()
    rule = RULE_OF_FORMAT["json"]
    docs = bench.genia_documents(SHARED_DATA)[:20]
    got = bench.score(lambda t: split_sentences(t, rule), docs)["f1"]
    reported = json.loads(RESULTS.read_text())["genia_first20_f1"][rule]
    assert got >= reported - 1e-9, (rule, got, reported)
