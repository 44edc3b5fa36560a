"""The ``hf`` format: Hugging Face datasets built here (never downloaded) read as the file readers do.

Layouts (flat ClassLabel / integer / string tags, nested entities), every way to name a dataset
(save_to_disk folder, DatasetDict folder:split, JSON Lines, Parquet), document ids, each bad row
and bad dataset with its one-line error, ``check``, and train.py + eval.py on a DatasetDict
against the same sentences as a CoNLL file: identical losses and predictions.
"""

from __future__ import annotations

import json
import re

import datasets
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, List, Value

from helpers import logged_losses, run_script, train_args
from vee_jax.data import DataError, MissingDataFile, Sentence, read_conll, read_split
from vee_jax.data.check import main as check_main

TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
ROWS = {  # flat BIO, the tags as strings
    "tokens": [["Peter", "Blackburn", "visits", "Bonn"], [], ["no", "entity"], ["Bonn", "Bonn"]],
    "ner_tags": [["B-PER", "I-PER", "O", "B-LOC"], [], ["O", "O"], ["B-LOC", "B-LOC"]],
}
EXPECTED = [Sentence(("Peter", "Blackburn", "visits", "Bonn"), ((0, 1, "PER"), (3, 3, "LOC"))),
            Sentence(()), Sentence(("no", "entity")), Sentence(("Bonn", "Bonn"), ((0, 0, "LOC"), (1, 1, "LOC")))]


@pytest.fixture(autouse=True)
def _datasets_cache(tmp_path, monkeypatch):
    """load_dataset (JSON Lines, Parquet) caches Arrow files: here, not in ~/.cache."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")


def class_label_dataset(rows: dict = ROWS) -> Dataset:
    feats = Features({"tokens": List(Value("string")), "ner_tags": List(ClassLabel(names=TAGS))})
    ids = [[TAGS.index(t) for t in tags] for tags in rows["ner_tags"]]
    return Dataset.from_dict({"tokens": rows["tokens"], "ner_tags": ids}, features=feats)


def hf(spec, **options) -> list[Sentence]:
    return read_split(str(spec), "hf", **options)


# --------------------------------------------------------------------------------------------
# Flat layout and the ways to name a dataset

def test_flat_class_label_reads_as_the_same_conll_file(tmp_path):
    class_label_dataset().save_to_disk(str(tmp_path / "ds"))
    conll = tmp_path / "train.conll"
    conll.write_text("\n\n".join("\n".join(f"{w} {t}" for w, t in zip(ws, ts))
                                 for ws, ts in zip(ROWS["tokens"], ROWS["ner_tags"]) if ws) + "\n")
    got = hf(tmp_path / "ds", scheme="bio")
    assert got == EXPECTED
    assert [s for s in got if s.words] == read_conll(conll, scheme="bio")  # CoNLL has no empty sentence


def test_dataset_dict_split_json_lines_and_parquet_read_the_same(tmp_path):
    ds = class_label_dataset()
    DatasetDict(train=ds, test=ds.select([0])).save_to_disk(str(tmp_path / "dd"))
    ds.to_json(str(tmp_path / "x.jsonl"))  # integers: the ClassLabel names are lost in JSON
    ds.to_parquet(str(tmp_path / "x.parquet"))  # Parquet keeps the features
    assert hf(f"{tmp_path / 'dd'}:train", scheme="bio") == EXPECTED
    assert hf(f"{tmp_path / 'dd'}:test", scheme="bio") == EXPECTED[:1]
    assert hf(tmp_path / "x.parquet", scheme="bio") == EXPECTED
    assert hf(tmp_path / "x.jsonl", scheme="bio", tag_names=TAGS) == EXPECTED


def test_tag_names_with_string_tags_and_integer_tags(tmp_path):
    Dataset.from_dict(ROWS).save_to_disk(str(tmp_path / "strings"))
    assert hf(tmp_path / "strings", scheme="bio") == EXPECTED
    assert hf(tmp_path / "strings", scheme="bio", tag_names=TAGS) == EXPECTED
    with pytest.raises(DataError, match=r"row 0: token 0: tag 'B-PER' is not in config.data.tag_names"):
        hf(tmp_path / "strings", tag_names=["O", "B-LOC"])
    ints = {"tokens": ROWS["tokens"], "ner_tags": [[TAGS.index(t) for t in ts] for ts in ROWS["ner_tags"]]}
    Dataset.from_dict(ints).save_to_disk(str(tmp_path / "ints"))
    assert hf(tmp_path / "ints", scheme="bio", tag_names=TAGS) == EXPECTED
    # IOB1 (the default) reads the two B-LOC as two entities too; I-X after O starts an entity.
    iob1 = Dataset.from_dict({"tokens": [["a", "b", "c"]], "ner_tags": [["I-PER", "I-PER", "B-PER"]]})
    iob1.save_to_disk(str(tmp_path / "iob1"))
    assert hf(tmp_path / "iob1") == [Sentence(("a", "b", "c"), ((0, 1, "PER"), (2, 2, "PER")))]


def test_lenient_bio_repairs_are_counted(tmp_path):
    Dataset.from_dict({"tokens": [["a", "b"]], "ner_tags": [["O", "I-PER"]]}).save_to_disk(str(tmp_path / "d"))
    stats: dict = {}
    assert hf(tmp_path / "d", scheme="bio", lenient=True, stats=stats) == [Sentence(("a", "b"), ((1, 1, "PER"),))]
    assert stats == {"repairs": 1, "rows": 1, "documents": 0}


def test_document_ids_and_other_column_names(tmp_path):
    Dataset.from_dict({"words": [["a"], ["b"], ["c"]], "labels": [["B-X"], ["O"], ["O"]], "doc": [7, 7, 8]}
                      ).save_to_disk(str(tmp_path / "d"))
    stats: dict = {}
    got = hf(tmp_path / "d", tokens_column="words", tags_column="labels", doc_id_column="doc", stats=stats)
    assert [s.doc_id for s in got] == ["7", "7", "8"] and stats["documents"] == 2
    assert got[0].spans == ((0, 0, "X"),)
    assert hf(tmp_path / "d", tokens_column="words", tags_column="labels")[0].doc_id is None


# --------------------------------------------------------------------------------------------
# Nested layout

def test_nested_entities_end_exclusive(tmp_path):
    rows = {"tokens": [["IL-2", "gene", "expression"], ["x"]],
            "entities": [[{"start": 0, "end": 2, "type": "DNA"}, {"start": 0, "end": 1, "type": "protein"}], []]}
    want = [Sentence(("IL-2", "gene", "expression"), ((0, 0, "protein"), (0, 1, "DNA"))), Sentence(("x",))]
    Dataset.from_dict(rows).save_to_disk(str(tmp_path / "list"))
    assert hf(tmp_path / "list") == want
    # Sequence({...}) features come back as a dict of lists; a ClassLabel type is decoded.
    feats = Features({"tokens": datasets.Sequence(Value("string")),
                      "entities": datasets.Sequence({"start": Value("int32"), "end": Value("int32"),
                                                     "type": ClassLabel(names=["DNA", "protein"])})})
    seq = {"tokens": rows["tokens"], "entities": [{"start": [0, 0], "end": [2, 1], "type": [0, 1]},
                                                  {"start": [], "end": [], "type": []}]}
    Dataset.from_dict(seq, features=feats).save_to_disk(str(tmp_path / "seq"))
    assert hf(tmp_path / "seq") == want
    Dataset.from_dict(rows).to_json(str(tmp_path / "n.jsonl"))
    assert hf(tmp_path / "n.jsonl") == want


# --------------------------------------------------------------------------------------------
# Bad rows and bad datasets: which dataset, which row, what is wrong

BAD_ROWS = {
    "a missing token": ({"tokens": [["a"], ["b", None]], "ner_tags": [["O"], ["O", "O"]]}, {},
                        "row 1: 'tokens' must be a list of strings, got ['b', None]"),
    "no tags": ({"tokens": [["a"]], "ner_tags": [None]}, {}, "row 0: 'ner_tags' must be a list of tags, got None"),
    "tag count": ({"tokens": [["a", "b"]], "ner_tags": [["O"]]}, {}, "row 0: 1 tags in 'ner_tags' for 2 tokens"),
    "not a tag": ({"tokens": [["a"]], "ner_tags": [["PER"]]}, {},
                  "row 0: token 0: tag 'PER' is not O, B-TYPE or I-TYPE"),
    "BIO I- after O": ({"tokens": [["a", "b"], ["a", "b"]], "ner_tags": [["O", "O"], ["O", "I-PER"]]},
                       {"scheme": "bio"}, "row 1: token 1: BIO tag I-PER after O (expected B-PER; "
                       "config.data.lenient=True or check --lenient reads it as B-PER)"),
    "integer tag out of range": ({"tokens": [["a"]], "ner_tags": [[9]]}, {"tag_names": TAGS},
                                 "row 0: token 0: tag 9 is not an index into the 5 tag names"),
    "string tag not in tag_names": ({"tokens": [["a"]], "ner_tags": [["B-ORG"]]}, {"tag_names": TAGS},
                                    "row 0: token 0: tag 'B-ORG' is not in config.data.tag_names"),
    "entity ends before it starts": ({"tokens": [["a", "b"]], "entities": [[{"start": 1, "end": 1, "type": "X"}]]},
                                     {}, "row 0: entity 0 (X): end 1 <= start 1 (end is exclusive: tokens[start:end])"),
    "entity out of range": ({"tokens": [["a", "b"]], "entities": [[{"start": 1, "end": 3, "type": "X"}]]},
                            {}, "row 0: entity 0 (X): [1, 3) out of range for a 2-token row"),
    "entity without type": ({"tokens": [["a"]], "entities": [[{"start": 0, "end": 1, "type": ""}]]},
                            {}, "row 0: entity 0: 'type' must be a non-empty string, got ''"),
    "no document id": ({"tokens": [["a"], ["b"]], "ner_tags": [["O"], ["O"]], "doc": ["d1", None]},
                       {"doc_id_column": "doc"}, "row 1: document id None in 'doc' is not a string or number"),
}


@pytest.mark.parametrize("case", list(BAD_ROWS))
def test_bad_rows_name_dataset_row_and_problem(tmp_path, case):
    rows, options, expected = BAD_ROWS[case]
    Dataset.from_dict(rows).save_to_disk(str(tmp_path / "bad"))
    with pytest.raises(DataError) as info:
        hf(tmp_path / "bad", **options)
    assert str(info.value) == f"{tmp_path / 'bad'}: {expected}"
    assert info.value.row is not None


def test_bad_datasets_name_the_dataset_and_the_problem(tmp_path):
    ds = Dataset.from_dict({"tokens": [["a"]], "ner_tags": [[0]]})
    ds.save_to_disk(str(tmp_path / "ints"))
    DatasetDict(train=ds, dev=ds).save_to_disk(str(tmp_path / "dd"))
    Dataset.from_dict({"words": [["a"]], "ner_tags": [["O"]], "entities": [[]]}).save_to_disk(str(tmp_path / "cols"))
    (tmp_path / "plain").mkdir()
    (tmp_path / "x.csv").write_text("tokens\n")
    cases = [
        (tmp_path / "ints", {}, "column 'ner_tags' holds integer tags without ClassLabel names: give them in "
                                "config.data.tag_names (check --tag-names)"),
        (tmp_path / "dd", {}, f"is a DatasetDict folder: name the split as {tmp_path / 'dd'}:SPLIT (splits: train, dev)"),
        (f"{tmp_path / 'dd'}:test", {}, "no split 'test' in this DatasetDict (splits: train, dev)"),
        (f"{tmp_path / 'ints'}:train", {}, f"{tmp_path / 'ints'} is a Dataset folder (one split), not a "
                                           f"DatasetDict: drop ':train'"),
        (tmp_path / "cols", {}, "no 'tokens' column for the words (columns: words, ner_tags, entities; "
                                "config.data.hf_tokens_column names it)"),
        (tmp_path / "cols", {"tokens_column": "words"}, "has both a 'ner_tags' and an 'entities' column: set "
         "config.data.hf_tags_column='' (nested) or hf_entities_column='' (flat)"),
        (tmp_path / "cols", {"tokens_column": "words", "tags_column": "", "entities_column": ""},
         "no '' column (flat layout) and no '' column (nested layout); columns: words, ner_tags, entities "
         "(config.data.hf_tags_column, hf_entities_column name them)"),
        (tmp_path / "plain", {}, "is a folder but not one written by Dataset.save_to_disk or DatasetDict.save_to_disk"),
        (tmp_path / "x.csv", {}, "a .csv file: the hf format reads .jsonl, .json, .parquet files and save_to_disk folders"),
        ("hub:someone", {}, "a Hub dataset is named hub:NAME:SPLIT, e.g. hub:eriktks/conll2003:train "
                            "(its configuration goes in config.data.hf_config)"),
    ]
    for spec, options, expected in cases:
        with pytest.raises(DataError) as info:
            hf(spec, **options)
        assert str(info.value) == f"{spec}: {expected}"
    with pytest.raises(MissingDataFile, match="no such file or folder"):
        hf(tmp_path / "nowhere")


def test_check_describes_a_dataset_and_exits_2_on_a_bad_row(tmp_path, capsys):
    class_label_dataset().save_to_disk(str(tmp_path / "ds"))
    assert check_main(["check", str(tmp_path / "ds"), "--format", "hf", "--scheme", "bio", "--backbone", "none"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"== {tmp_path / 'ds'} (hf)")
    for row in (r"sentences +4", r"entities +4", r"  LOC +3 \(75.0%\)", r"  PER +1 \(25.0%\)"):
        assert re.search(f"^{row}$", out, re.M), (row, out)
    Dataset.from_dict({"tokens": [["a"]], "ner_tags": [["B-PER", "O"]]}).save_to_disk(str(tmp_path / "bad"))
    assert check_main(["check", str(tmp_path / "bad"), "--format", "hf", "--backbone", "none"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"error: {tmp_path / 'bad'}: row 0: 2 tags in 'ner_tags' for 1 tokens"


# --------------------------------------------------------------------------------------------
# train.py + eval.py: a DatasetDict and the same sentences as CoNLL give the same run

LABELS = ("DNA", "RNA", "cell_line", "cell_type", "protein")


def _flat(spans):
    """Outermost spans only (longest first): a flat layout cannot hold nested entities."""
    kept = []
    for s, e, t in sorted(spans, key=lambda x: (x[0] - x[1], x[0])):
        if all(e < s2 or e2 < s for s2, e2, _ in kept):
            kept.append((s, e, t))
    return sorted(kept)


def _bio(n, spans):
    tags = ["O"] * n
    for s, e, t in spans:
        tags[s:e + 1] = [f"B-{t}"] + [f"I-{t}"] * (e - s)
    return tags


def test_train_from_a_dataset_dict_equals_train_from_conll(tmp_path, tiny_data, tiny_minilm_vocab_dir):
    names = ["O"] + [f"{p}-{t}" for t in LABELS for p in "BI"]
    splits, conll = {}, {}
    for split in ("train", "dev", "test"):
        sents = [Sentence(r["sentence"], [(min(x["index"]), max(x["index"]), x["type"]) for x in r["ner"]])
                 for r in json.loads((tiny_data / f"{split}.json").read_text())]
        tags = [_bio(len(s), _flat(s.spans)) for s in sents]
        feats = Features({"tokens": List(Value("string")), "ner_tags": List(ClassLabel(names=names))})
        splits[split] = Dataset.from_dict({"tokens": [list(s.words) for s in sents],
                                           "ner_tags": [[names.index(t) for t in ts] for ts in tags]}, features=feats)
        conll[split] = tmp_path / f"{split}.conll"
        conll[split].write_text("".join("".join(f"{w}\t{t}\n" for w, t in zip(s.words, ts)) + "\n"
                                        for s, ts in zip(sents, tags)))
    DatasetDict(splits).save_to_disk(str(tmp_path / "genia_dd"))

    def run(name: str, fmt: str, paths: dict[str, str]) -> tuple[dict, list]:
        wd = tmp_path / name
        args = [a for a in train_args(wd, tiny_data, tiny_minilm_vocab_dir, "--config.train.max_steps=4")
                if not a.startswith(("--config.data.train=", "--config.data.dev=", "--config.data.test="))]
        args += [f"--config.data.format={fmt}", "--config.data.scheme=bio", "--config.data.nested=False",
                 *(f"--config.data.{k}={v}" for k, v in paths.items())]
        r = run_script(args)
        assert r.returncode == 0, r.stderr[-3000:]
        out = tmp_path / f"{name}.json"
        r = run_script(["eval.py", "--workdir", str(wd), "--checkpoint", "latest", "--split", "test",
                        "--strategy", "full", "--output", str(out), "--quiet"])
        assert r.returncode == 0, r.stderr[-3000:]
        return logged_losses(wd), json.loads(out.read_text())["predictions"]

    hf_losses, hf_pred = run("hf", "hf", {s: f"{tmp_path / 'genia_dd'}:{s}" for s in splits})
    conll_losses, conll_pred = run("conll", "conll", {s: str(p) for s, p in conll.items()})
    assert sorted(hf_losses) == [1, 2, 3, 4]
    assert hf_losses == conll_losses
    assert hf_pred == conll_pred and len(hf_pred) == 8 and any(hf_pred)  # spans predicted: not a vacuous match


def test_train_stops_on_a_bad_row_with_one_line(tmp_path):
    Dataset.from_dict({"tokens": [["a", "b"], ["c"]], "ner_tags": [["B-X", "I-X"], ["I-Y"]]}).save_to_disk(str(tmp_path / "bad"))
    r = run_script(["train.py", "--config", "configs/demo.py", "--workdir", str(tmp_path / "wd"),
                    "--config.data.format=hf", "--config.data.scheme=bio", f"--config.data.train={tmp_path / 'bad'}",
                    f"--config.data.dev={tmp_path / 'bad'}"])
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert r.stderr.strip().splitlines()[-1] == (
        f"error: {tmp_path / 'bad'}: row 1: token 0: BIO tag I-Y after the sentence start (expected B-Y; "
        "config.data.lenient=True or check --lenient reads it as B-Y)")


def test_run_fields_and_cache_key_of_an_hf_split(tmp_path):
    import ml_collections

    from vee_jax.cache import data_fingerprint
    from vee_jax.config import base_config
    from vee_jax.trained import run_config_changes

    # A workdir saved before the hf fields existed resumes: a missing field has its default value.
    old = base_config().to_dict()
    for k in ("hf_config", "hf_tokens_column", "hf_tags_column", "hf_entities_column", "hf_doc_id_column", "tag_names"):
        del old["data"][k]
    new = base_config()
    assert run_config_changes(ml_collections.ConfigDict(old), new) == []
    new.data.tag_names = ("O", "B-X")
    assert run_config_changes(ml_collections.ConfigDict(old), new) == ["data.tag_names: [] -> ['O', 'B-X']"]

    # The cache key of FOLDER:SPLIT follows the folder's files and the split.
    ds = class_label_dataset()
    DatasetDict(train=ds, dev=ds).save_to_disk(str(tmp_path / "dd"))
    cfg = base_config().data
    cfg.format, cfg.dev = "hf", f"{tmp_path / 'dd'}:dev"
    key = data_fingerprint(cfg, "dev")
    assert key["file"]["split"] == "dev" and any("dev" in f[0] for f in key["file"]["files"])
    DatasetDict(train=ds, dev=ds.select([0])).save_to_disk(str(tmp_path / "dd"))
    assert data_fingerprint(cfg, "dev") != key
