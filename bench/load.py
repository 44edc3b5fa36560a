"""Load test of serve.py: rising request rates, the adaptive depth off and on (loopback only, bounded).

    python bench/load.py --workdir ~/vee_runs/demo --rates 2,5,10,20,40,80 --seconds 10 \
        --target-p95-ms 200 --out results/demo/load

For each mode (``off``: no latency target, ``on``: ``--target-p95-ms``, both on the default
continuous scheduler; ``micro``: no latency target, ``--scheduler micro``, the micro-batches of the
earlier service, for a side-by-side run) the script starts
``serve.py`` on 127.0.0.1 at a free port, waits for ``GET /health``, then for each offered rate
sends requests with Poisson arrivals (one text each, sentences of the workdir's test split written
back as text) for ``--seconds`` or ``--max-requests-per-rate`` requests, and waits for every answer.
Each request ends in 200, an explicit 503 with Retry-After (the queue is full), or is counted as
``other`` (any other status, a connection error, no answer within ``--answer-timeout``): the
service should never produce ``other``.

Writes ``load.json`` (every rate's summary), ``load.md`` (the table) and ``load.png`` (p50/p95
latency, throughput and average exit layer against offered load, both modes) under ``--out``.
The whole run stops after ``--max-seconds`` or ``--max-requests`` in all.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

ROOT = Path(__file__).resolve().parents[1]
LOOPBACK = "127.0.0.1"


# --- one offered rate -------------------------------------------------------------------------
async def _one(client, url: str, text: str, t_sched: float, timeout: float) -> dict[str, Any]:
    t0 = time.perf_counter()
    rec: dict[str, Any] = {"sent": t0 - t_sched}
    try:
        r = await client.post(url + "/ner", json={"texts": [text]}, timeout=timeout)
        rec["status"] = r.status_code
        if r.status_code == 200:
            body = r.json()
            rec["exit_layers"] = [x["exit_layer"] for x in body["results"]]
            rec["level"] = body.get("level")
        elif r.status_code == 503:
            rec["retry_after"] = r.headers.get("retry-after")
    except Exception as e:  # counted as "other": the service must not drop requests
        rec["status"], rec["error"] = None, repr(e)
    rec["latency_s"] = time.perf_counter() - t0
    return rec


async def run_rate(url: str, rate: float, seconds: float, max_requests: int, texts: Sequence[str], *,
                   seed: int = 0, answer_timeout: float = 60.0) -> tuple[list[dict[str, Any]], float]:
    """Open-loop Poisson arrivals at ``rate`` requests/s for ``seconds`` (at most ``max_requests``).

    Returns ``(records, elapsed_s)``: one record per request (``status``, ``latency_s``,
    ``exit_layers``, ``level``, ``retry_after``, ``error``) and the time until the last answer.
    """
    import httpx

    rng = random.Random(seed)
    tasks = []
    # Idle connections expire here before uvicorn closes them (its keep-alive timeout is 5 s, as
    # httpx's default expiry): with both at 5 s a request could go out on a connection the server
    # was closing, and came back as ReadError('') ("other") after a stall.
    limits = httpx.Limits(max_connections=2000, max_keepalive_connections=200, keepalive_expiry=2.0)
    async with httpx.AsyncClient(limits=limits) as client:
        start = time.perf_counter()
        t = 0.0
        while len(tasks) < max_requests:
            t += rng.expovariate(rate)
            if t > seconds:
                break
            delay = start + t - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(_one(client, url, rng.choice(texts), start + t, answer_timeout)))
        records = list(await asyncio.gather(*tasks))
        elapsed = time.perf_counter() - start
    return records, elapsed


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (nearest rank), None for no values."""
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, max(0, int(-(-q * len(v) // 100)) - 1))]


def summarize(records: Sequence[dict[str, Any]], rate: float, elapsed: float, mode: str) -> dict[str, Any]:
    """One table row: offered and achieved load, latency percentiles of answered requests, exits."""
    ok = [r for r in records if r["status"] == 200]
    lat = [1e3 * r["latency_s"] for r in ok]
    exits = [m for r in ok for m in r["exit_layers"]]
    levels = [r["level"] for r in ok if r.get("level") is not None]
    return {"mode": mode, "offered_rps": rate, "sent": len(records), "ok": len(ok),
            "rejected_503": sum(r["status"] == 503 for r in records),
            "rejected_without_retry_after": sum(r["status"] == 503 and not r.get("retry_after") for r in records),
            "other": sum(r["status"] not in (200, 503) for r in records),
            # what the "other" requests got (a status, or the client's error), to tell why
            "other_errors": sorted({str(r.get("error") or r["status"]) for r in records
                                    if r["status"] not in (200, 503)})[:5],
            "throughput_rps": len(ok) / elapsed if elapsed > 0 else 0.0,
            "p50_ms": percentile(lat, 50), "p95_ms": percentile(lat, 95), "p99_ms": percentile(lat, 99),
            "avg_exit_layer": sum(exits) / len(exits) if exits else None,
            "avg_level": sum(levels) / len(levels) if levels else None, "max_level": max(levels, default=None)}


def scrape(url: str) -> dict[str, float]:
    """``GET /metrics`` as ``{series: value}`` (the service's own view: steps, compilations, p95)."""
    import httpx

    text = httpx.get(url + "/metrics", timeout=10).text
    return {l.rsplit(" ", 1)[0]: float(l.rsplit(" ", 1)[1]) for l in text.splitlines() if l and l[0] != "#"}


# --- the server -------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def start_server(workdir: str, port: int, extra: Sequence[str], log_path: Path) -> subprocess.Popen:
    """``serve.py`` on 127.0.0.1:port (its log to ``log_path``)."""
    cmd = [sys.executable, str(ROOT / "serve.py"), "--workdir", workdir, "--host", LOOPBACK, "--port", str(port),
           *extra]
    log = open(log_path, "w")
    return subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, TQDM_DISABLE="1"))


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float) -> dict[str, Any]:
    import httpx

    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"serve.py exited with code {proc.returncode} before answering /health")
        try:
            r = httpx.get(url + "/health", timeout=2)
            if r.status_code == 200:
                return r.json()
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"serve.py did not answer /health within {timeout} s")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# --- texts ------------------------------------------------------------------------------------
NO_SPACE_BEFORE = {".", ",", ";", ":", ")", "]", "?", "!"}
NO_SPACE_AFTER = {"(", "["}


def detokenize(words: Sequence[str]) -> str:
    """Words back to text: no space before ``. , ; : ) ] ? !`` nor after ``( [``."""
    out = ""
    for i, w in enumerate(words):
        if i and w not in NO_SPACE_BEFORE and words[i - 1] not in NO_SPACE_AFTER:
            out += " "
        out += w
    return out


def test_texts(workdir: str, limit: int = 500) -> list[str]:
    """Up to ``limit`` sentences of the workdir's test split, as text."""
    from vee_jax.data.splits import load_split
    from vee_jax.trained import load_run_info

    config, _ = load_run_info(Path(workdir).expanduser())
    return [detokenize(s.words) for s in load_split(config.data, "test")[:limit] if s.words]


# --- the plot and the table -------------------------------------------------------------------
def plot(rows: Sequence[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, 4, figsize=(16, 3.8), dpi=110)
    panels = [("p50_ms", "p50 latency (ms)"), ("p95_ms", "p95 latency (ms)"), ("throughput_rps", "answered requests/s"),
              ("avg_exit_layer", "average exit layer")]
    for ax, (key, label) in zip(axes, panels):
        for mode, style in (("off", "o-"), ("on", "s--"), ("micro", "^:")):
            pts = [(r["offered_rps"], r[key]) for r in rows if r["mode"] == mode and r[key] is not None]
            if pts:
                ax.plot(*zip(*pts), style, label=MODES[mode])
        ax.set_xlabel("offered load (requests/s)")
        ax.set_ylabel(label)
        ax.set_xscale("log")
        rates = sorted({r["offered_rps"] for r in rows})
        ax.set_xticks(rates, [f"{x:g}" for x in rates])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


MODES = {"off": "continuous, fixed policy", "on": "continuous, adaptive depth", "micro": "micro-batches, fixed policy"}


def markdown(rows: Sequence[dict[str, Any]]) -> str:
    fmt = lambda v, d=1: "-" if v is None else f"{v:.{d}f}"
    lines = ["| mode | offered req/s | sent | 200 | 503 | other | answered req/s | p50 ms | p95 ms | avg exit layer "
             "| avg level | steps down/up | new compilations |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['mode']} | {r['offered_rps']:g} | {r['sent']} | {r['ok']} | {r['rejected_503']} | {r['other']} | "
                     f"{fmt(r['throughput_rps'])} | {fmt(r['p50_ms'])} | {fmt(r['p95_ms'])} | "
                     f"{fmt(r['avg_exit_layer'], 2)} | {fmt(r['avg_level'], 2)} | {r.get('steps_down', '-')}/"
                     f"{r.get('steps_up', '-')} | {r.get('compilations', '-')} |")
    return "\n".join(lines) + "\n"


# --- main -------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", required=True)
    p.add_argument("--rates", default="2,5,10,20,40,80", help="offered loads, requests/s, comma-separated")
    p.add_argument("--seconds", type=float, default=10.0, help="duration of each rate")
    p.add_argument("--max-requests-per-rate", type=int, default=1000)
    p.add_argument("--max-requests", type=int, default=8000, help="in all (both modes)")
    p.add_argument("--max-seconds", type=float, default=1200.0, help="in all, server starts included")
    p.add_argument("--answer-timeout", type=float, default=60.0)
    p.add_argument("--target-p95-ms", type=float, default=200.0, help="the 'on' mode's latency target")
    p.add_argument("--modes", default="off,on", help="of off, on, micro (see above)")
    p.add_argument("--serve-args", default="", help="more serve.py options, e.g. '--strategy vee --tau 0.01'")
    p.add_argument("--startup-timeout", type=float, default=900.0)
    p.add_argument("--out", default="load_results")
    args = p.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    texts = test_texts(args.workdir)
    rates = [float(r) for r in args.rates.split(",")]
    t_start, sent, rows, notes = time.time(), 0, [], []
    for mode in args.modes.split(","):
        extra = (args.serve_args.split() + (["--target-p95-ms", str(args.target_p95_ms)] if mode == "on" else [])
                 + (["--scheduler", "micro"] if mode == "micro" else []))
        port = free_port()
        url = f"http://{LOOPBACK}:{port}"
        proc = start_server(args.workdir, port, extra, out / f"serve_{mode}.log")
        try:
            health = wait_healthy(url, proc, args.startup_timeout)
            print(f"[{mode}] serving {health['num_layers']} layers; ladder "
                  f"{[lv['policy'] for lv in health['ladder']]}", flush=True)
            for i, rate in enumerate(rates):
                left_s = args.max_seconds - (time.time() - t_start)
                budget = min(args.max_requests_per_rate, args.max_requests - sent)
                if budget <= 0 or left_s <= args.seconds:
                    notes.append(f"stopped before {mode} {rate:g} req/s: the run's bound was reached")
                    break
                before = scrape(url)
                records, elapsed = asyncio.run(run_rate(url, rate, args.seconds, budget, texts, seed=i,
                                                        answer_timeout=args.answer_timeout))
                after = scrape(url)
                sent += len(records)
                row = summarize(records, rate, elapsed, mode)
                for key, series in (("steps_down", 'vee_level_changes_total{direction="down"}'),
                                    ("steps_up", 'vee_level_changes_total{direction="up"}'),
                                    ("compilations", "vee_compilations")):
                    row[key] = int(after.get(series, 0) - before.get(series, 0))
                rows.append(row)
                print(markdown([row]).splitlines()[-1], flush=True)
                time.sleep(1.0)  # let the queue drain and the controller settle between rates
            (out / f"metrics_{mode}.txt").write_text(__import__("httpx").get(url + "/metrics", timeout=10).text)
        finally:
            stop_server(proc)
    from vee_jax.paths import display_path

    (out / "load.json").write_text(json.dumps({"rows": rows, "notes": notes, "args": {k: display_path(v) if k in ("workdir", "out") and v else v for k, v in vars(args).items()}}, indent=2))
    (out / "load.md").write_text(markdown(rows))
    plot(rows, out / "load.png", f"{Path(args.workdir).name}: serve.py under load")
    print(markdown(rows))
    print("\n".join(notes))
    print(f"wrote {out / 'load.json'}, {out / 'load.md'}, {out / 'load.png'}")
    return 0 if all(r["other"] == 0 and r["rejected_without_retry_after"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
