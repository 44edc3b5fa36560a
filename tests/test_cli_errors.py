"""Bad input through the real command lines: one line naming the file, the place and the problem.

Every case runs the command a user runs (``python -m vee_jax.data check``, ``train.py``,
``eval.py``) in a subprocess and checks the exact message, exit code 2 and no traceback.
The readers' own tests (test_readers.py) cover every format's error cases in-process; here
each bad-data case of issue 7 goes through the command line once.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vee_jax.data.readers import FORMATS

ROOT = Path(__file__).resolve().parents[1]
JSON_EXPECTED = FORMATS["json"]


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1", TQDM_DISABLE="1", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _assert_one_line_error(r: subprocess.CompletedProcess, expected: str) -> None:
    """Exit 2, no traceback, and stderr's last line is exactly ``error: <expected>``."""
    assert r.returncode == 2, (r.returncode, r.stderr[-3000:])
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    assert r.stderr.strip().splitlines()[-1] == f"error: {expected}"


# --- python -m vee_jax.data check FILE ---------------------------------------------------------
# (file name, content, extra options, the message after "error: <file>: ")
CHECK_CASES = {
    "invalid JSON": (
        "train.json", '[{"sentence": ["a"], "ner": []},\n{"sentence": ["b"] "ner": []}]', [],
        "record 1 (line 2, column 20): invalid JSON: Expecting ',' delimiter"),
    "record without sentence": (
        "train.json", '[{"sentence": ["a"], "ner": []},\n{"ner": []}]', [],
        f"record 1 (line 2, column 1): no 'sentence' key (expected {JSON_EXPECTED})"),
    "record without ner": (
        "train.jsonl", '{"sentence": ["a"], "ner": []}\n{"sentence": ["b"]}\n', [],
        f"record 1 (line 2, column 1): no 'ner' key (expected {JSON_EXPECTED})"),
    "span out of range": (
        "train.json", '[{"sentence": ["IL-2", "gene"], "ner": [{"index": [1, 2], "type": "DNA"}]}]', [],
        "record 0 (line 1, column 2): entity 0 (DNA): index [1, 2] out of range for a 2-word sentence"),
    "end before start": (
        "train.json", '[{"sentence": ["IL-2", "gene"], "ner": [{"index": [1, 0], "type": "DNA"}]}]', [],
        "record 0 (line 1, column 2): entity 0 (DNA): index [1, 0] ends before it starts "
        "(expected the entity's word indices in ascending order)"),
    "CoNLL wrong number of columns": (
        "train.conll", "EU NNP B-ORG\nrejects O\n", ["--format", "conll"],
        "line 2: 2 columns, but this sentence's first line has 3"),
    "BIO I- after O": (
        "train.conll", "EU B-ORG\nrejects O\nGerman I-MISC\n", ["--format", "conll", "--scheme", "bio"],
        "line 3: BIO tag I-MISC after O (expected B-MISC; config.data.lenient=True or check --lenient "
        "reads it as B-MISC)"),
    "BIO I- after another type": (
        "train.conll", "Peter B-PER\nBlackburn I-LOC\n", ["--format", "conll", "--scheme", "bio"],
        "line 2: BIO tag I-LOC after a PER entity (expected B-LOC; config.data.lenient=True or check "
        "--lenient reads it as B-LOC)"),
    "bytes that are not UTF-8": (
        "train.conll", b"EU B-ORG\nrejects O\nGerm\xe4n B-MISC\n", ["--format", "conll"],
        "line 3, column 5: not valid UTF-8: byte 0xe4 at byte offset 23 (invalid continuation byte)"),
    "empty file": (
        "train.json", "", [], f"empty file (expected {JSON_EXPECTED})"),
}


@pytest.mark.parametrize("case", list(CHECK_CASES))
def test_check_names_file_line_and_problem(tmp_path, case):
    name, content, options, expected = CHECK_CASES[case]
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    fmt = [] if "--format" in options else ["--format", "json"]
    r = _run(["-m", "vee_jax.data", "check", name, *fmt, *options, "--backbone", "none"], cwd=tmp_path)
    _assert_one_line_error(r, f"{name}: {expected}")


def test_check_missing_split(tmp_path):
    r = _run(["-m", "vee_jax.data", "check", "dev.json", "--format", "json", "--backbone", "none"], cwd=tmp_path)
    _assert_one_line_error(r, f"dev.json: no such file (expected json format: {JSON_EXPECTED})")


# --- train.py: the data a config names ------------------------------------------------------
def _write_json(path: Path, records: list[dict]) -> Path:
    path.write_text(json.dumps(records))
    return path


def _rec(words: list[str], *ents: tuple[list[int], str]) -> dict:
    return {"sentence": words, "ner": [{"index": i, "type": t} for i, t in ents]}


@pytest.fixture
def splits(tmp_path) -> dict[str, Path]:
    """train (types DNA, protein), a dev with an RNA that train never had, a BIO CoNLL file."""
    return {
        "train": _write_json(tmp_path / "train.json", [_rec(["IL-2", "gene"], ([0, 1], "DNA")),
                                                       _rec(["NF-kB", "binds"], ([0], "protein"))]),
        "dev_rna": _write_json(tmp_path / "dev.json", [_rec(["no", "entity"]),
                                                       _rec(["mRNA", "level"], ([0], "RNA"))]),
        "bio": (tmp_path / "train.conll"),
    }


def _train(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    return _run([str(ROOT / "train.py"), "--config", str(ROOT / "configs" / "demo.py"),
                 "--workdir", str(tmp_path / "wd"), *overrides], cwd=tmp_path)


def test_train_refuses_a_dev_type_that_train_never_had(tmp_path, splits):
    r = _train(tmp_path, f"--config.data.train={splits['train']}", f"--config.data.dev={splits['dev_rna']}")
    _assert_one_line_error(r, f"dev ({splits['dev_rna']}): sentence 1: entity type 'RNA' is not in the label set "
                              f"['DNA', 'protein'] (the types found in {splits['train']})")
    assert not (tmp_path / "wd").exists()  # refused before anything is written


def test_train_refuses_a_type_outside_the_configured_labels(tmp_path, splits):
    r = _train(tmp_path, f"--config.data.train={splits['train']}", f"--config.data.dev={splits['train']}",
               "--config.data.labels=('DNA',)")
    _assert_one_line_error(r, f"train ({splits['train']}): sentence 1: entity type 'protein' is not in the "
                              f"label set ['DNA'] (config.data.labels)")


def test_train_refuses_a_bio_error_and_reports_lenient_repairs(tmp_path, splits):
    splits["bio"].write_text("EU B-ORG\nrejects O\nGerman I-MISC\n")
    conll = [f"--config.data.train={splits['bio']}", "--config.data.format=conll", "--config.data.scheme=bio"]
    r = _train(tmp_path, *conll, f"--config.data.dev={splits['bio']}")
    _assert_one_line_error(r, f"{splits['bio']}: line 3: BIO tag I-MISC after O (expected B-MISC; "
                              f"config.data.lenient=True or check --lenient reads it as B-MISC)")
    # lenient: train is read with one repair, reported; then the missing dev split stops it
    missing = tmp_path / "nope.conll"
    r = _train(tmp_path, *conll, "--config.data.lenient=True", f"--config.data.dev={missing}")
    assert f"{splits['bio']}: 1 BIO tag(s) repaired" in r.stderr
    _assert_one_line_error(r, f"{missing}: no such file (expected conll format: {FORMATS['conll']})")


def test_train_without_a_dev_split(tmp_path, splits):
    r = _train(tmp_path, f"--config.data.train={splits['train']}", "--config.data.dev=")
    _assert_one_line_error(r, "config.data.dev is empty: give the path of the dev split (json format), or "
                              "config.data.dev_fraction for a held-out dev")


# --- eval.py: a workdir that does not match the data or its backbone -----------------------
def _make_workdir(tmp_path: Path, backbone: Path, monkeypatch) -> Path:
    """A workdir written by the real trainer (labels DNA, protein; one step, latest checkpoint).

    The step itself is replaced by one that returns the state unchanged: these tests are about
    what eval.py checks before it evaluates, and a real step would only cost a compilation.
    """
    from vee_jax import trainer
    from vee_jax.config import base_config

    data = _write_json(tmp_path / "train.json", [_rec(["w1", "w2"], ([0, 1], "DNA")),
                                                  _rec(["w3"], ([0], "protein"))] * 4)
    c = base_config()
    c.data.train = c.data.dev = c.data.test = str(data)
    c.model.backbone = str(backbone)
    c.train.batch_size, c.train.max_steps = 2, 1
    monkeypatch.setattr(trainer.distributed, "make_train_step", lambda *a, **k: lambda state, batch: (
        state, {"loss": 1.0, "grad_norm": 1.0, "per_exit": [1.0, 1.0, 1.0]}))
    wd = tmp_path / "wd"
    trainer.train_and_evaluate(c, wd)
    monkeypatch.undo()
    assert (wd / "checkpoints" / "latest" / "1").is_dir()
    return wd


def _eval(wd: Path, *args: str) -> subprocess.CompletedProcess:
    return _run([str(ROOT / "eval.py"), "--workdir", str(wd), "--checkpoint", "latest", "--quiet", *args], cwd=wd.parent)


@pytest.fixture
def backbone(tmp_path, tiny_bert_dir) -> Path:
    """A private copy of the tiny random BERT (vocabulary 1000), free to break."""
    return Path(shutil.copytree(tiny_bert_dir, tmp_path / "bert"))


def _save_tokenizer(folder: Path, vocab: list[str]) -> None:
    from transformers import BertTokenizerFast

    BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}).save_pretrained(str(folder))


SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def test_eval_data_with_a_type_outside_the_workdirs_labels(tmp_path, backbone, monkeypatch):
    wd = _make_workdir(tmp_path, backbone, monkeypatch)
    bad = _write_json(tmp_path / "other.json", [_rec(["w1"]), _rec(["w2", "w3"], ([1], "RNA"))])
    r = _eval(wd, "--data", str(bad))
    _assert_one_line_error(r, f"{bad}: sentence 1: entity type 'RNA' is not in the label set ['DNA', 'protein'] "
                              f"(the label set the workdir was trained with)")
    # and an older workdir format is refused with a message
    fmt = json.loads((wd / "vee_format.json").read_text())
    (wd / "vee_format.json").write_text(json.dumps({**fmt, "format_version": 0}))
    _assert_one_line_error(_eval(wd), f"{wd}: written by workdir format version 0; this vee_jax reads version 1. "
                                      f"Retrain, or use the vee_jax release that wrote it.")


def test_eval_with_the_backbone_folder_gone(tmp_path, backbone, monkeypatch):
    wd = _make_workdir(tmp_path, backbone, monkeypatch)
    shutil.rmtree(backbone)
    r = _eval(wd)
    _assert_one_line_error(r, f"{wd} was trained with backbone '{backbone}', which cannot be loaded now: backbone "
                              f"'{backbone}' is neither a shipped alias (minilm) nor a local folder; expected a "
                              f"Hugging Face BERT/ALBERT folder with config.json and model.safetensors (or "
                              f"pytorch_model.bin)")


def test_eval_with_a_replaced_tokenizer(tmp_path, backbone, monkeypatch):
    wd = _make_workdir(tmp_path, backbone, monkeypatch)
    words = [f"w{i}" for i in range(995)]
    _save_tokenizer(backbone, SPECIALS + words[::-1])  # same size, other ids
    r = _eval(wd)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: {wd} was trained with a tokenizer of 1000 entries (vocabulary hash ")
    assert f"but backbone '{backbone}' now has one of 1000 entries" in line
    assert line.endswith("the checkpoint's word ids would mean other words; restore the backbone folder it "
                         "was trained with")

    _save_tokenizer(backbone, SPECIALS + [f"w{i}" for i in range(1195)])  # more ids than embedding rows
    _assert_one_line_error(_eval(wd), f"{wd} was trained with backbone '{backbone}', which cannot be loaded now: "
                                      f"{backbone}: the tokenizer has 1200 entries but the model's embedding "
                                      f"table has 1000 rows (config.json vocab_size): ids past the table would "
                                      f"read other rows; the tokenizer and the weights come from different models")


def test_eval_with_replaced_weights(tmp_path, backbone, monkeypatch):
    from conftest import make_random_hf

    wd = _make_workdir(tmp_path, backbone, monkeypatch)
    tokenizer = tmp_path / "tokenizer"
    tokenizer.mkdir()
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(backbone / f, tokenizer / f)
    make_random_hf(backbone, "bert", vocab_size=1200)  # another embedding table, same tokenizer below
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tokenizer / f, backbone / f)
    r = _eval(wd)
    _assert_one_line_error(r, f"{wd} was trained with encoder tensor ['embeddings']['word'] of shape [1000, 64], "
                              f"but backbone {str(backbone)!r} now gives [1200, 64]: restore the backbone folder it "
                              f"was trained with")
