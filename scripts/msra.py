"""The MSRA floor with MiniLM: its run's results and the [UNK] rate of the backbone's vocabulary on the data.

    python scripts/msra.py [--runs ~/vee_runs] [--backbone minilm]

Copies ``metrics.jsonl``, ``test_per_exit.json`` and its plot from the ``msra`` run
(``scripts/real_runs.sh msra``) into ``results/msra/``, and writes ``results/msra/unk.json``: the
share of subwords that the run's tokenizer maps to ``[UNK]`` on MSRA's train and test files
(``vee_jax.data.check.subword_counts``, what ``python -m vee_jax.data check`` reports).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "msra"


def main(argv=None) -> None:
    from vee_jax.config import DATA
    from vee_jax.data.check import subword_counts
    from vee_jax.data.readers import read_split
    from vee_jax.weights import load_tokenizer, resolve_backbone

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default=str(Path.home() / "vee_runs"))
    ap.add_argument("--backbone", default="minilm")
    args = ap.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    run = Path(args.runs).expanduser() / "msra"
    for f in ("metrics.jsonl", "test_per_exit.json", "test_per_exit.png"):
        if (run / f).exists():
            shutil.copy(run / f, OUT / f)
    tokenizer = load_tokenizer(resolve_backbone(args.backbone))
    unk = {"backbone": args.backbone, "command": "python scripts/msra.py"}
    for split, name in (("train", "train.txt"), ("test", "test_with_label.txt")):
        sentences = read_split(str(DATA / "msra" / name), "msra")
        _, n_unk, total, _ = subword_counts(sentences, tokenizer)
        unk[f"{split}_sentences"], unk[f"{split}_unk_subwords"], unk[f"{split}_subwords"] = len(sentences), n_unk, total
        unk[f"{split}_unk_percent"] = 100 * n_unk / total
        print(f"{split}: {n_unk} of {total} subwords are [UNK] ({100 * n_unk / total:.1f}%)")
    (OUT / "unk.json").write_text(json.dumps(unk, indent=2) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
