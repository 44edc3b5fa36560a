"""serve.py's start-up: seconds until ``GET /health`` is ready, a first start and a later one.

    python bench/serve_startup.py --workdir runs/demo --out bench/results/serve_startup.json

Starts ``serve.py`` (127.0.0.1, a free port, its default warm-up: every ladder program on every
batch shape up to the model's subword limit) twice in a row on one fresh, empty JAX persistent
compilation cache (``VEE_JAX_XLA_CACHE`` set to a temporary folder): the first start compiles
everything and writes the cache, the later one reads it. For each start: seconds from launching
the process until ``/health`` first answers (the server listens, 503 while warming up) and until
it answers 200 (ready), the warm-up's own seconds, and from ``/metrics`` the XLA compilations
and the programs read from the persistent cache, of the warm-up (``/health``'s ``warm_up``) and of
the whole process (``vee_compilations``, ``vee_compilation_cache_hits``: loading the model
compiles small programs too, under a second each, which the cache does not keep). Writes the JSON and a Markdown table beside it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from _common import cpu_name, write_results
from load import LOOPBACK, ROOT, free_port, scrape, stop_server


def start(workdir: str, cache: Path, log_path: Path, extra: list[str]) -> dict:
    """One start of serve.py on ``cache``: its timings and compilation counts, then stopped."""
    port = free_port()
    url = f"http://{LOOPBACK}:{port}"
    cmd = [sys.executable, str(ROOT / "serve.py"), "--workdir", workdir, "--host", LOOPBACK, "--port", str(port),
           *extra]
    env = dict(os.environ, VEE_JAX_XLA_CACHE=str(cache), TQDM_DISABLE="1")
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    listening = None
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"serve.py exited with code {proc.returncode}; see {log_path}")
            try:
                r = httpx.get(url + "/health", timeout=2)
            except httpx.HTTPError:
                r = None
            now = time.perf_counter() - t0
            if r is not None and listening is None:
                listening = now
            if r is not None and r.status_code == 200:
                health, ready = r.json(), now
                break
            if r is not None and r.json().get("status") == "warm-up failed":
                raise RuntimeError(f"warm-up failed: {r.json()}")
            time.sleep(0.2)
        metrics = scrape(url)
    finally:
        stop_server(proc)
    return {"seconds_to_listening": round(listening, 1), "seconds_to_ready": round(ready, 1),
            "warm_up_seconds": health["warm_up"]["seconds"],
            "programs_x_shapes": health["warm_up"]["programs_x_shapes"],
            "warm_up_max_subwords": health["warm_up"]["max_subwords"],
            "warm_up_compilations": health["warm_up"]["compilations"],
            "warm_up_cache_hits": health["warm_up"]["cache_hits"],
            "compilations": int(metrics["vee_compilations"]),
            "cache_hits": int(metrics["vee_compilation_cache_hits"]),
            "ladder": [lv["policy"] for lv in health["ladder"]], "programs": health["programs"],
            "batch_size": health["batch_size"]}


def markdown(result: dict) -> str:
    lines = ["| start | seconds to listening | seconds to ready (/health 200) | warm-up s | programs x shapes "
             "| warm-up: XLA compilations | warm-up: read from cache | process: XLA compilations "
             "| process: read from cache |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in (("first (empty cache)", result["first"]), ("later (cache written)", result["later"])):
        lines.append(f"| {name} | {r['seconds_to_listening']} | {r['seconds_to_ready']} | {r['warm_up_seconds']} | "
                     f"{r['programs_x_shapes']} | {r['warm_up_compilations']} | {r['warm_up_cache_hits']} | "
                     f"{r['compilations']} | {r['cache_hits']} |")
    return "\n".join(lines) + f"\n\n{result['machine']}. {result['note']}\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", required=True)
    p.add_argument("--serve-args", default="", help="more serve.py options, e.g. '--batch-size 16'")
    p.add_argument("--note", default="", help="a sentence on the conditions of the run, written with the results")
    p.add_argument("--out", default="serve_startup.json")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="vee_serve_startup_") as tmp:
        cache, runs = Path(tmp) / "xla", {}
        for name in ("first", "later"):
            runs[name] = start(args.workdir, cache, Path(tmp) / f"serve_{name}.log", args.serve_args.split())
            print(name, {k: v for k, v in runs[name].items() if k not in ("ladder", "programs")}, flush=True)
    result = {"workdir": Path(args.workdir).name, "serve_args": args.serve_args,
              "command": f"python bench/serve_startup.py --workdir runs/{Path(args.workdir).name}"
                         + (f" --serve-args '{args.serve_args}'" if args.serve_args else ""),
              "machine": f"{cpu_name()}, {os.cpu_count()} cores", "note": args.note, **runs}
    write_results(args.out, result, markdown(result))


if __name__ == "__main__":
    main()
