"""Write the GENIA sample that configs/demo.py trains on (shipped inside the package).

    python scripts/make_demo_data.py [--genia ../shared/data/genia]

Takes the first 1,000 / 200 / 200 sentences of GENIA's train / dev / test (W2NER JSON, the
files described in ../shared/data/genia/README.md) and copies the GENIA licence beside them.
"""

import argparse
import json
import shutil
from pathlib import Path

SIZES = {"train": 1000, "dev": 200, "test": 200}
OUT = Path(__file__).resolve().parents[1] / "vee_jax" / "data" / "demo"

ATTRIBUTION = """# The demo sample: GENIA (nested NER, 5 types)

The first 1,000 / 200 / 200 sentences of the train / dev / test splits of the GENIA term
corpus 3.02 in W2NER JSON format (sentence-order split 15,023 / 1,669 / 1,854), written by
`scripts/make_demo_data.py`.

Corpus annotations (c) GENIA Project, licensed under Creative Commons Attribution 3.0
Unported; the full GENIA Project licence is in `GENIA_LICENSE.txt` beside this file. The
abstracts come from PubMed/MEDLINE. Cite: Kim et al. 2003, "GENIA corpus - a semantically
annotated corpus for bio-textmining", Bioinformatics 19 Suppl 1.
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--genia", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "genia")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    for split, n in SIZES.items():
        records = json.loads((args.genia / f"{split}.json").read_text(encoding="utf-8"))[:n]
        with open(OUT / f"{split}.json", "w", encoding="utf-8") as f:
            f.write("[\n" + ",\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n]\n")
    shutil.copyfile(args.genia / "GENIA_LICENSE.txt", OUT / "GENIA_LICENSE.txt")
    (OUT / "README.md").write_text(ATTRIBUTION, encoding="utf-8")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
