"""Two runs of bench/latency.py (or bench/in_loop.py), ratio by ratio: did a change keep the speed?

    python bench/compare_runs.py bench/results/flax_before_cpu_demo.json bench/results/cpu_demo.json \
        --out bench/results/flax_compare_demo.md

Compares the ratios, never absolute times (they move 20-30% from run to run here): per batch-1
point ``wall_over_layer_speedup`` (wall speed-up over layer speed-up, matched by position),
``jax_full_over_torch_eager``, ``jax_full_over_onnxruntime``, per batched point
``throughput_ratio``; for in_loop files the forced-exit ``wall_over_layer`` rows. A ratio of
"after" to "before" below ``1 - tolerance`` on a higher-is-better figure (or above ``1 +
tolerance`` on a time ratio) is flagged.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def ratios(r: dict) -> dict[str, tuple[float, bool]]:
    """``{name: (value, higher_is_better)}`` of one run."""
    out: dict[str, tuple[float, bool]] = {}
    for key in ("points", "points_exact_exits"):
        for i, p in enumerate(r.get(key, [])):
            out[f"{key}[{i}] wall/layer"] = (p["wall_over_layer_speedup"], True)
    for key in ("jax_full_over_torch_eager", "jax_full_over_onnxruntime"):
        if key in r:
            out[key] = (r[key], False)  # time over time: lower is better
    for i, p in enumerate(r.get("batched", [])):
        out[f"batched[{i}] throughput_ratio"] = (p["throughput_ratio"], True)
    for p in r.get("forced_exit_32_words", []):
        out[f"forced exit {p['exit_layer']} wall/layer"] = (p["wall_over_layer"], True)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--tolerance", type=float, default=0.05)
    ap.add_argument("--out", default=None, help="also write the table here (.md)")
    args = ap.parse_args(argv)
    a, b = (ratios(json.loads(Path(p).read_text())) for p in (args.before, args.after))
    lines = [f"`{Path(args.before).name}` (before) against `{Path(args.after).name}` (after); "
             f"flagged when worse by more than {args.tolerance:.0%}.", "",
             "| ratio | before | after | after / before | |", "|---|---|---|---|---|"]
    worse = 0
    for name in a:
        if name not in b:
            continue
        (va, up), (vb, _) = a[name], b[name]
        rel = vb / va
        bad = rel < 1 - args.tolerance if up else rel > 1 + args.tolerance
        worse += bad
        lines.append(f"| {name} | {va:.3f} | {vb:.3f} | {rel:.3f} | {'worse' if bad else ''} |")
    lines += ["", f"{worse} of {sum(n in b for n in a)} ratios worse by more than {args.tolerance:.0%}."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
