"""train.py's start-up on GENIA, piece by piece, and what a ``datasets`` feature cache would save.

    python bench/startup.py --config configs/genia.py --out bench/results/startup_genia.json

Times, in one process: the imports, reading the train and dev files, loading the backbone,
tokenising train + dev with ``encode_sentences`` (twice: the first call warms the tokenizer),
and the alternative the Hugging Face ``datasets`` library offers: the tokenised features
written once to an Arrow folder (``Dataset.from_dict(...).save_to_disk``) and read back into
``Encoded`` records on a later start (the fastest read found: Arrow list columns sliced as
numpy views). Then ``train.py`` itself up to its first logged step (``--config.train.max_steps=1``,
a fresh workdir, JAX's compilation cache on), since the compile of the first step is part of
what a user waits for. The decision it informs is in docs/decisions.md.
"""

from __future__ import annotations

import time

T0 = time.perf_counter()

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import importlib.util  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from vee_jax.data.features import Encoded, encode_sentences  # noqa: E402
from vee_jax.data.splits import label_set, load_split  # noqa: E402
from vee_jax.weights import load_backbone  # noqa: E402

IMPORTS_S = time.perf_counter() - T0
ROOT = Path(__file__).resolve().parents[1]
RAGGED = ("input_ids", "word_index", "word_end")


def load_config(path: str):
    """The ``get_config()`` of a config file."""
    spec = importlib.util.spec_from_file_location("bench_config", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config()


def timed(fn, *args, **kw):
    """``(result, seconds)``."""
    t = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t


def write_cache(encoded: list[Encoded], folder: str) -> None:
    """The features as an Arrow dataset: ragged int columns, the rest as Python values."""
    import datasets

    rows = {f.name: [getattr(e, f.name) for e in encoded] for f in dataclasses.fields(Encoded)}
    rows["spans"] = [[list(s) for s in sp] for sp in rows["spans"]]
    for k in [k for k in rows if k not in RAGGED + ("spans", "num_words")]:
        rows[k] = [repr(v) for v in rows[k]]  # small extras; a real cache would type them
    datasets.Dataset.from_dict(rows).save_to_disk(folder)


def read_cache(folder: str) -> list[Encoded]:
    """Arrow dataset -> ``Encoded`` records: list columns sliced as numpy views (no copies)."""
    import ast

    import datasets

    table = datasets.load_from_disk(folder).data.table

    def ragged(col):
        arr = table.column(col).combine_chunks()
        vals, offs = arr.flatten().to_numpy(), arr.offsets.to_numpy()
        return [vals[offs[i]:offs[i + 1]] for i in range(len(offs) - 1)]

    cols = {k: ragged(k) for k in RAGGED}
    cols["spans"] = [tuple(map(tuple, s)) for s in table.column("spans").to_pylist()]
    cols["num_words"] = [int(n) for n in table.column("num_words").to_numpy()]
    for f in dataclasses.fields(Encoded):
        if f.name not in cols:
            cols[f.name] = [ast.literal_eval(v) for v in table.column(f.name).to_pylist()]
    n = len(cols["num_words"])
    return [Encoded(**{k: v[i] for k, v in cols.items()}) for i in range(n)]


def same(a: list[Encoded], b: list[Encoded]) -> bool:
    """Identical features (arrays by value)."""
    return len(a) == len(b) and all(
        all(np.array_equal(getattr(x, k), getattr(y, k)) for k in RAGGED) and x.spans == y.spans
        and x.num_words == y.num_words for x, y in zip(a, b))


def first_step_s(config: str, workdir: str) -> float:
    """Wall seconds of ``train.py`` up to and including its first step (then it stops)."""
    t = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "train.py"), "--config", config, "--workdir", workdir,
                    "--config.train.max_steps=1", "--config.train.checkpoint_every_steps=0"],
                   check=True, capture_output=True, cwd=ROOT)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/genia.py")
    ap.add_argument("--out", default="bench/results/startup_genia.json")
    ap.add_argument("--skip-train", action="store_true", help="leave out the train.py run")
    args = ap.parse_args()
    from _common import cpu_name, write_results

    config = load_config(args.config)
    (train, dev), read_s = timed(lambda: (load_split(config.data, "train"), load_split(config.data, "dev")))
    labels = label_set(config.data, train)
    (_, _, tok), backbone_s = timed(load_backbone, config.model.backbone, jnp.float32)
    encode = lambda: [encode_sentences(s, tok, labels, config.data.max_subwords)[0] for s in (train, dev)]  # noqa: E731
    _, encode_first_s = timed(encode)
    enc, encode_s = timed(encode)
    with tempfile.TemporaryDirectory() as d:
        _, write_s = timed(lambda: [write_cache(e, f"{d}/{i}") for i, e in enumerate(enc)])
        back, read_cache_s = timed(lambda: [read_cache(f"{d}/{i}") for i in range(2)])
        assert all(same(a, b) for a, b in zip(enc, back)), "the cache does not give back the features"
        train_s = None if args.skip_train else first_step_s(args.config, f"{d}/wd")
    r = {"config": args.config, "cpu": cpu_name(), "train_sentences": len(train), "dev_sentences": len(dev),
         "imports_s": IMPORTS_S, "read_files_s": read_s, "backbone_s": backbone_s,
         "encode_first_s": encode_first_s, "encode_s": encode_s, "cache_write_s": write_s,
         "cache_read_s": read_cache_s, "cache_saves_s": encode_s - read_cache_s,
         "train_py_to_first_step_s": train_s}
    rows = [(k, f"{v:.2f}" if isinstance(v, float) else str(v)) for k, v in r.items() if k.endswith("_s")]
    md = ("| train.py start-up piece (GENIA train + dev) | seconds |\n|---|---|\n"
          + "".join(f"| {k} | {v} |\n" for k, v in rows))
    write_results(args.out, r, md)


if __name__ == "__main__":
    main()
