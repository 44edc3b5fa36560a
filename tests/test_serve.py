"""The service: the depth controller, the micro-batcher, and HTTP round trips with the real server."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from test_predict import POLICY, _load_bench, assert_same_result
from vee_jax.policies import BudgetPolicy, FullPolicy, VeePolicy
from vee_jax.serving import DepthController, Job, Level, MicroBatcher, Overloaded, default_ladder


# --- the controller (pure: a synthetic queue, no clock) ------------------------------------------
def _drive(ctrl: DepthController, queues, ms_per_sentence=10.0, p95=None) -> list[int]:
    return [ctrl.observe(q, p95, ms_per_sentence) for q in queues]


def test_controller_lowers_depth_under_a_queue_and_restores_it():
    ctrl = DepthController(num_levels=4, target_ms=100, restore_fraction=0.5, cooldown=2, hold=3)
    # 10 ms per sentence: a queue over 10 sentences waits over the 100 ms target.
    levels = _drive(ctrl, [0, 5, 12, 12, 12, 12, 12, 12, 12, 12])
    assert levels == [0, 0, 1, 1, 2, 2, 3, 3, 3, 3]  # one step per cooldown, never past the last rung
    # Between 50 and 100 ms of queue (the hysteresis band) the level holds.
    assert _drive(ctrl, [7, 8, 9, 6, 7, 8]) == [3] * 6
    # Calm (<= 50 ms): one step up after every 3 calm observations, back to the deepest policy.
    assert _drive(ctrl, [0] * 10) == [3, 3, 2, 2, 2, 1, 1, 1, 0, 0]
    # A calm streak broken by a band observation starts again.
    ctrl2 = DepthController(num_levels=2, target_ms=100, hold=3, level=1)
    assert _drive(ctrl2, [0, 0, 7, 0, 0, 0]) == [1, 1, 1, 1, 1, 0]
    assert (ctrl.steps_down, ctrl.steps_up) == (3, 3)


def test_controller_steps_up_only_with_headroom_above():
    """Calm, but the deeper rung (12 ms a sentence) could not carry 80 sentences/s at 70% of the
    worker (0.96 > 0.7): the level holds; at 50/s (0.6) it steps up. Unknown rate or cost: up."""
    ctrl = DepthController(num_levels=3, target_ms=100, cooldown=1, hold=2, level=2)
    assert [ctrl.observe(0, None, 5.0, 80.0, 12.0) for _ in range(4)] == [2, 2, 2, 2]
    assert [ctrl.observe(0, None, 5.0, 50.0, 12.0) for _ in range(2)] == [1, 1]  # calm long enough already
    assert [ctrl.observe(0, None, 5.0, 80.0, None) for _ in range(2)] == [0, 0]
    with pytest.raises(ValueError, match="max_utilisation"):
        DepthController(num_levels=2, max_utilisation=0)


def test_rate_window_counts_the_last_seconds():
    from vee_jax.serving import RateWindow

    w = RateWindow(seconds=2.0)
    for t in range(10):
        w.add(t * 0.5, 3)  # 6 sentences a second, until t = 4.5
    assert w.per_s(4.5) == pytest.approx(6.0 * 5 / 4)  # 4.5 - 2 < t: 2.5, 3, ..., 4.5 = 5 samples in 2 s
    assert w.per_s(10.0) == 0.0


def test_controller_reacts_to_p95_and_is_off_without_target():
    ctrl = DepthController(num_levels=3, target_ms=100, cooldown=1, hold=2)
    assert _drive(ctrl, [0, 0], p95=150.0) == [1, 2]  # slow answers with an empty queue: still too slow
    assert _drive(ctrl, [0, 0], p95=80.0) == [2, 2]  # under target but above half: hold
    assert _drive(ctrl, [0, 0, 0, 0], p95=None) == [2, 1, 1, 0]  # no recent answers count as calm
    off = DepthController(num_levels=3, target_ms=None)
    assert _drive(off, [1000] * 5, p95=1e6) == [0] * 5
    with pytest.raises(ValueError):
        DepthController(num_levels=0)


def test_ladders():
    # an adaptive base: budgets from M/2 (2M/3 = 4 layers cost more than VEE's 3.44 on the demo)
    assert [lv.policy for lv in default_ladder(VeePolicy(), 6)] == [VeePolicy(), BudgetPolicy(3), BudgetPolicy(2)]
    assert [lv.policy for lv in default_ladder(FullPolicy(), 6)] == [FullPolicy(), BudgetPolicy(4), BudgetPolicy(3),
                                                                    BudgetPolicy(2)]
    assert [lv.policy for lv in default_ladder(BudgetPolicy(3), 6)] == [BudgetPolicy(3), BudgetPolicy(2)]
    assert [lv.policy for lv in default_ladder(FullPolicy(), 1)] == [FullPolicy()]


def test_ladder_from_a_sweep(tmp_path):
    from vee_jax.serving import ladder_from_sweep, load_ladder
    from vee_jax.sweeps import read_csv, write_csv

    def row(tau, avg, f1, split="dev"):
        return {"split": split, "strategy": "vee", "measure": "kl", "tau": tau, "patience": 2, "layer": "",
                "ensemble": False, "avg_exit_layer": avg, "precision": f1, "recall": f1, "f1": f1, "tp": 1,
                "n_pred": 1, "n_gold": 1, "n_sentences": 10, "sentences": "all"}

    rows = [row(0.01, 5.0, 0.70), row(0.1, 3.9, 0.69), row(0.2, 3.5, 0.60), row(0.3, 2.8, 0.65), row(0.5, 1.9, 0.5),
            row(0.6, 1.5, 0.4), row(0.9, 1.0, 0.99, split="test")]
    write_csv(rows, tmp_path / "sweep.csv")
    assert read_csv(tmp_path / "sweep.csv") == rows  # the reader is the writer's inverse
    levels = ladder_from_sweep(tmp_path / "sweep.csv", VeePolicy(tau=0.01), 6)
    assert ladder_from_sweep(rows, VeePolicy(tau=0.01), 6) == levels
    assert [lv.policy.tau for lv in levels] == [0.01, 0.1, 0.3, 0.5]  # best dev F1 at <= 4, 3, 2 layers
    assert [lv.avg_exit_layer for lv in levels] == [5.0, 3.9, 2.8, 1.9]
    (tmp_path / "ladder.json").write_text(json.dumps([{"strategy": "full"}, {"policy": {"strategy": "budget",
                                                                                         "layer": 2}, "f1": 0.5}]))
    assert [lv.policy for lv in load_ladder(tmp_path / "ladder.json")] == [FullPolicy(), BudgetPolicy(2)]
    (tmp_path / "bad.json").write_text(json.dumps([{"strategy": "budget", "layers": 2}]))
    with pytest.raises(ValueError, match="bad.json: policy 0: .*no field"):
        load_ladder(tmp_path / "bad.json")


# --- the micro-batcher (no model: its queue and choices) ------------------------------------------
def _batcher(target_ms=None, max_queue=64, levels=3):
    ladder = [Level(FullPolicy())] + [Level(BudgetPolicy(m)) for m in range(levels - 1, 0, -1)]
    ctrl = DepthController(len(ladder), target_ms, cooldown=1, hold=2)
    return MicroBatcher(SimpleNamespace(batch_size=8), ladder, ctrl, metrics=None, max_wait_ms=0,
                        max_queue=max_queue)


def test_batcher_takes_whole_requests_and_the_controllers_policy():
    b = _batcher()
    jobs = [b.submit(Job([0] * n, None, 0.0)) for n in (2, 3, 2)]
    own = b.submit(Job([0], BudgetPolicy(1), 0.0))
    big = b.submit(Job([0] * 5, None, 0.0))
    assert b.queued == 13
    taken, policy, level = b._take()
    assert taken == jobs and policy == FullPolicy() and level == 0  # 7 rows; the next 5 would not fit
    taken, policy, level = b._take()
    assert taken == [own] and policy == BudgetPolicy(1) and level is None  # a request's own policy
    taken, _, _ = b._take()
    assert taken == [big] and b.queued == 0
    with pytest.raises(ValueError, match="1..8 sentences"):
        b.submit(Job([0] * 9, None, 0.0))


def test_batcher_admits_the_jobs_of_one_request_all_or_none():
    b = _batcher(max_queue=8)
    with pytest.raises(Overloaded, match="queue is full"):
        b.submit_all([Job([0] * 5, None, 0.0), Job([0] * 5, None, 0.0)])  # 10 > 8: neither queued
    assert b.queued == 0 and not b._queue
    b.submit_all([Job([0] * 4, None, 0.0), Job([0] * 4, None, 0.0)])
    assert b.queued == 8
    b.submit_all([])  # an empty document: nothing to queue, nothing refused


def test_batcher_steps_down_with_its_queue_and_refuses_past_max_queue():
    b = _batcher(target_ms=50, max_queue=20)
    b.ms_per_sentence = {0: 10.0, 1: 10.0, 2: 10.0}
    for _ in range(3):
        b.submit(Job([0] * 6, None, 0.0))  # 18 queued x 10 ms = 180 ms > 50 ms
    with pytest.raises(Overloaded) as e:
        b.submit(Job([0] * 3, None, 0.0))
    assert e.value.retry_after_s >= 1
    _, policy, level = b._take()  # dispatch: the controller sees 18 queued
    assert (level, policy) == (1, BudgetPolicy(2))
    _, policy, level = b._take()  # 12 queued: still pressure
    assert (level, policy) == (2, BudgetPolicy(1))
    with pytest.raises(Overloaded, match="within the 50 ms latency target"):  # the shallowest rung: 6 x 10 ms
        b.submit(Job([0], None, 0.0))  # of queue > half the target
    _, _, level = b._take()  # 6 queued = 60 ms, still over 50 ms: the bottom rung holds
    assert level == 2
    assert [b.observe() for _ in range(4)] == [2, 1, 1, 0]  # idle ticks: calm, back up


# --- HTTP: the real server on 127.0.0.1 -----------------------------------------------------------
@pytest.fixture(scope="module")
def server(tiny_workdir):
    import uvicorn

    from vee_jax.predict import Predictor
    from vee_jax.serving import Limits, create_app

    predictor = Predictor.from_workdir(tiny_workdir, policy=POLICY, batch_size=8)
    # A small model limit keeps the warm-up short (its default: every shape up to the limit; 2
    # programs x rows 1, 2, 4, 8 x subwords 16, 24, 32) and makes a long text run as windows.
    predictor.max_subwords = 32
    app = create_app(predictor, limits=Limits(max_texts=4, max_chars=400, max_body_bytes=4096),
                     max_wait_ms=2)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    srv = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    t0 = time.time()
    while not srv.started:
        assert time.time() - t0 < 30 and thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    assert app.state.warmup.wait(300) and app.state.warmup.error is None, "the warm-up did not finish"
    yield SimpleNamespace(url=f"http://127.0.0.1:{sock.getsockname()[1]}", predictor=predictor, app=app)
    srv.should_exit = True
    thread.join(timeout=30)


@pytest.fixture(scope="module")
def texts(tiny_workdir):
    detokenize = _load_bench().detokenize
    return [detokenize(r["sentence"]) for r in json.loads((tiny_workdir / "data.json").read_text())]


def test_http_round_trip(server, texts):
    import httpx

    pair = texts[:2]
    r = httpx.post(server.url + "/ner", json={"texts": pair}, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    answered = [x["exit_layer"] for x in body["results"]]  # every sentence's exit layer, as answered
    assert body["policy"] == server.predictor.policy.to_dict() and body["level"] == 0
    for got, want, text in zip(body["results"], server.predictor(pair), pair):
        assert_same_result({**got, "text": text}, want.to_dict())
        assert all(text[e["start"]:e["end"]] == e["text"] for e in got["entities"])

    r = httpx.post(server.url + "/ner", json={"texts": pair, "policy": {"strategy": "budget", "layer": 2}}, timeout=60)
    assert r.status_code == 200 and r.json()["level"] is None
    answered += [x["exit_layer"] for x in r.json()["results"]]
    assert r.json()["policy"] == {"strategy": "budget", "layer": 2, "ensemble": False}
    assert [x["exit_layer"] for x in r.json()["results"]] == [2, 2]

    # The level in force answers, and says so (here forced: no latency target).
    ctrl = server.app.state.controller
    ctrl.level = 1
    try:
        r = httpx.post(server.url + "/ner", json={"texts": pair}, timeout=60).json()
    finally:
        ctrl.level = 0
    answered += [x["exit_layer"] for x in r["results"]]
    assert r["level"] == 1 and r["policy"] == {"strategy": "budget", "layer": 2, "ensemble": False}

    health = httpx.get(server.url + "/health").json()
    assert health["status"] == "ok" and health["num_layers"] == 4 and len(health["ladder"]) == 3  # vee, budgets 2, 1
    r = httpx.get(server.url + "/metrics")
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = [s for family in text_string_to_metric_families(r.text) for s in family.samples]
    values = {(s.name, frozenset(s.labels.items())): s.value for s in samples}
    value = lambda name, **labels: values[(name, frozenset(labels.items()))]
    assert value("vee_requests_total", path="/ner", code="200") == 3
    assert value("vee_request_latency_seconds_count") == 3
    assert value("vee_request_latency_seconds_bucket", le="+Inf") == 3
    # The exported counts and mean against the exit layers the three responses carried.
    exits = {int(s.labels["exit_layer"]): s.value for s in samples if s.name == "vee_sentences_total"}
    assert sorted(exits) == [1, 2, 3, 4]  # every layer, answered or not
    assert {m: v for m, v in exits.items() if v} == {m: answered.count(m) for m in set(answered)}
    assert len(answered) == 6
    assert value("vee_avg_exit_layer") == pytest.approx(sum(answered) / 6, abs=1e-5)
    assert any(s.name == "vee_policy_info" and s.labels["strategy"] == "vee" and s.labels["level"] == "0"
               and s.value == 1 for s in samples)
    assert value("vee_compilations") >= 2  # (vee and budget 2) x one batch shape
    assert value("vee_level_changes_total", direction="down") == 0 and value("vee_target_p95_ms") == -1
    schema = httpx.get(server.url + "/openapi.json").json()
    assert "/ner" in schema["paths"] and "NerRequest" in schema["components"]["schemas"]


CLIENT_ERRORS = [
    (b'{"texts": ["a", ', 400, "invalid JSON"),
    (b'{"texts": "IL-2"}', 422, "texts: Input should be a valid list"),
    (b'{"texts": [1]}', 422, "texts.0: Input should be a valid string"),
    (b'{"text": ["a"]}', 422, "texts: Field required"),
    (b'{"texts": []}', 422, "texts: List should have at least 1 item"),
    (json.dumps({"texts": ["a"] * 5}).encode(), 413, "5 texts, at most 4 per request"),
    (json.dumps({"texts": ["a", "b" * 401]}).encode(), 413, "texts.1: 401 characters, at most 400"),
    (json.dumps({"texts": ["\u00e9" * 399] * 4}).encode(), 413, "request body over 4096 bytes"),  # 6 bytes a char
    (json.dumps({"texts": ["a"], "policy": {"strategy": "fast"}}).encode(), 422,
     "policy: Input tag 'fast' found using 'strategy' does not match any of the expected tags: 'vee', "),
    (json.dumps({"texts": ["a"], "policy": {"strategy": "budget", "layer": 5}}).encode(), 422,
     "policy.budget.layer: Input should be less than or equal to 4"),  # the schema says 4: the model's layers
    (json.dumps({"texts": ["a"], "policy": {}}).encode(), 422, "policy: Unable to extract tag using discriminator"),
    (json.dumps({"texts": ["a"], "policy": {"strategy": "vee", "tau": "0.1"}}).encode(), 422,
     "policy.vee.tau: Input should be a valid number"),
    (json.dumps({"texts": ["a"], "policy": {"strategy": "vee", "patience": 0}}).encode(), 422,
     "policy.vee.patience: Input should be greater than or equal to 1"),
    (json.dumps({"texts": ["a"], "policy": {"strategy": "maxprob", "tau": 0.5}}).encode(), 422,  # not served here
     "policy: Input tag 'maxprob' found using 'strategy' does not match any of the expected tags: 'vee', 'budget'"),
    (json.dumps({"texts": ["a"], "policy": {"strategy": "vee", "measure": "cosine"}}).encode(), 422,  # not compiled
     "policy.vee.measure: Input should be 'kl'"),
    (json.dumps({"texts": ["a"], "policy": {"strategy": "budget", "layer": 2, "tau": 1}}).encode(), 422,
     "policy.budget.tau: Extra inputs are not permitted"),
    (json.dumps({"texts": ["a"], "polcy": {}}).encode(), 422, "polcy: Extra inputs are not permitted"),
]


@pytest.mark.parametrize("body, code, message", CLIENT_ERRORS, ids=[f"{c}-{m[:30]}" for _, c, m in CLIENT_ERRORS])
def test_http_client_errors(server, body, code, message):
    import httpx

    r = httpx.post(server.url + "/ner", content=body, headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == code and message in r.json()["detail"], r.text


def test_http_load_generator_gets_answers(server, texts):
    load = _load_bench()
    records, elapsed = asyncio.run(load.run_rate(server.url, rate=40, seconds=0.3, max_requests=6, texts=texts[:2]))
    row = load.summarize(records, 40, elapsed, "off")
    assert row["sent"] == len(records) >= 1 and row["ok"] == row["sent"] and row["other"] == 0
    assert row["p95_ms"] >= row["p50_ms"] > 0 and 1 <= row["avg_exit_layer"] <= 4
    scraped = load.scrape(server.url)  # bench/load.py's own reading of /metrics
    assert scraped['vee_level_changes_total{direction="down"}'] == 0 and scraped["vee_compilations"] >= 1


def test_full_queue_answers_503_with_retry_after(server):
    from fastapi.testclient import TestClient

    from vee_jax.serving import Limits, create_app

    app = create_app(server.predictor, limits=Limits(max_queue=0), start_worker=False, warmup_subwords=0)
    with TestClient(app) as client:
        r = client.post("/ner", json={"texts": ["IL-2"]})
    assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1 and "queue is full" in r.json()["detail"]


# --- readiness: nothing compiles on the request path --------------------------------------------
def _scraped(url: str) -> dict[str, float]:
    return _load_bench().scrape(url)


def test_no_compilation_after_warm_up(server):
    """Every shape up to the model's limit (rows 1..8, subwords 16..32, windows of a long text),
    under the ladder's policies and others of the same programs (other tau, patience, budget
    layer): 0 new XLA compilations. A policy of another program is refused (422)."""
    import httpx

    health = httpx.get(server.url + "/health").json()
    assert health["status"] == "ok" and health["warm_up"]["programs_x_shapes"] == 2 * 4 * 3
    # the continuous batches of both streamed programs (VEE, budget) on subword buckets 16, 24, 32
    assert health["scheduler"] == "continuous" and health["warm_up"]["continuous_batch_shapes"] == 2 * 3
    assert [p["strategy"] for p in health["programs"]] == ["vee", "budget"]
    assert health["programs"][0]["any"] == ["tau", "patience"]
    before, metric = server.predictor.compilations, _scraped(server.url)["vee_compilations"]
    policies = [None, {"strategy": "vee", "measure": "kl", "tau": 0.5, "patience": 3},
                {"strategy": "budget", "layer": 1}, {"strategy": "budget", "layer": 4}]
    for words in (1, 14, 15, 22, 23, 30):  # + [CLS] [SEP]: subword buckets 16, 24, 32
        for lines in (1, 2, 3, 5, 8):  # rows buckets 1, 2, 4, 4, 8: one documents job each
            for policy in policies[:2] if lines in (3, 5) else policies:
                doc = "\n".join(" ".join(["a"] * words) for _ in range(lines))
                r = httpx.post(server.url + "/ner/documents", json={"documents": [doc], "sentences": "lines",
                                                                    "policy": policy}, timeout=60)
                assert r.status_code == 200, r.text
    r = httpx.post(server.url + "/ner", json={"texts": [" ".join(["a"] * 100)]}, timeout=60)  # 4 windows of 32
    assert r.status_code == 200 and r.json()["results"][0]["windows"] > 1, r.text
    assert server.predictor.compilations == before
    assert _scraped(server.url)["vee_compilations"] == metric

    for other in ({"strategy": "vee", "measure": "cosine"}, {"strategy": "vee", "ensemble": True},
                  {"strategy": "entropy", "tau": 0.5}):
        r = httpx.post(server.url + "/ner", json={"texts": ["IL-2"], "policy": other}, timeout=60)
        assert r.status_code == 422, r.text  # the schema admits only the compiled programs' policies
        assert r.json()["detail"].startswith("policy"), r.text
    assert server.predictor.compilations == before


def test_compilations_count_real_xla_compilations(server):
    """The counter sees a new program compile once; a new knob value of it compiles nothing."""
    from vee_jax import compilations

    p = server.predictor
    before = p.compilations + compilations.cache_hits()  # compiled now, or read from a persistent cache
    p.predict_words([["a", "b"]], {"strategy": "entropy", "tau": 0.37, "ensemble": True})  # a program no test ran
    first = p.compilations + compilations.cache_hits() - before
    p.predict_words([["a", "b"]], {"strategy": "entropy", "tau": 0.9, "ensemble": True})
    assert first >= 1 and p.compilations + compilations.cache_hits() - before == first


def test_warming_up_answers_503(server, monkeypatch):
    from fastapi.testclient import TestClient

    from vee_jax.serving import create_app

    release = threading.Event()

    def slow_warm_up(policies, max_subwords=None, rows=None, on_step=None):
        on_step(1, 24)
        release.wait(30)
        return 0

    monkeypatch.setattr(server.predictor, "warm_up", slow_warm_up)
    app = create_app(server.predictor, start_worker=False)
    with TestClient(app) as client:
        t0 = time.time()
        while app.state.warmup.done < 1:
            assert time.time() - t0 < 10
            time.sleep(0.01)
        r = client.get("/health")
        # 24 (program, shape) pairs of the whole-batch engine, then 2 programs x 3 continuous-batch shapes
        assert r.status_code == 503 and r.json() == {"status": "warming up", "compiled": 1, "of": 24 + 6}
        assert int(r.headers["retry-after"]) >= 1
        for path, body in (("/ner", {"texts": ["IL-2"]}), ("/ner/documents", {"documents": ["IL-2."]})):
            r = client.post(path, json=body)
            assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1, r.text
            assert r.json()["detail"] == "warming up: 1 of 30 programs compiled"
        metrics = client.get("/metrics").text
        assert "vee_ready 0.0" in metrics and 'vee_requests_total{code="503",path="/ner"} 1.0' in metrics
        release.set()
        assert app.state.warmup.wait(10)
        assert client.get("/health").status_code == 200 and "vee_ready 1.0" in client.get("/metrics").text


def test_http_documents(server, texts):
    """POST /ner/documents over a real socket: a multi-sentence document answered at document offsets,
    as the Predictor answers it (after test_http_round_trip, which counts /ner's metrics)."""
    import httpx

    doc = " ".join(texts[:3])
    r = httpx.post(server.url + "/ner/documents", json={"documents": [doc], "sentences": "pysbd"}, timeout=60)
    assert r.status_code == 200, r.text
    got = r.json()["results"][0]
    want = server.predictor.predict_documents([doc], sentence_rule="pysbd")[0]
    assert len(got["sentences"]) == len(want.sentences) == 3
    assert [(s["start"], s["end"], s["exit_layer"]) for s in got["sentences"]] == \
           [(s.start, s.end, s.exit_layer) for s in want.sentences]
    assert [(e["start"], e["end"], e["type"], e["sentence"]) for e in got["entities"]] == \
           [(e.start, e.end, e.type, e.sentence) for e in want.entities]
    assert all(doc[e["start"]:e["end"]] == e["text"] for e in got["entities"])


# --- the continuous batcher (ContinuousBatcher): arrivals join the running batches ---------------
def test_continuous_batcher_answers_as_the_predictor_while_requests_arrive(tiny_workdir):
    """Requests submitted while others run (from two threads, staggered) are answered with the
    Predictor's own spans and exit layers: VEE sentences, and the windows of a sentence past the
    model's limit, and a budget rung, in continuous batches; a policy off the ladder and rows
    past ``stream_subwords`` in micro-batches. Sentences of several requests share layer calls, the
    slots bound what is in flight, and nothing is lost."""
    from vee_jax.predict import Predictor
    from vee_jax.serving import ContinuousBatcher, Metrics

    predictor = Predictor.from_workdir(tiny_workdir, policy=POLICY, batch_size=4)
    predictor.max_subwords = 32  # a longer sentence runs as windows of 32
    full = [r["sentence"] for r in json.loads((tiny_workdir / "data.json").read_text())]  # 25-32 subwords
    sentences = [s[:n] for s in full for n in (5, 9)] + full[:3]  # shorter ones too: subword buckets 16 and 24
    encoded = predictor.encode(sentences)
    windows = predictor.encode([full[0] + full[1]])  # one sentence, several rows
    assert len(windows) > 1 and windows[1].offset > 0
    ladder = default_ladder(predictor.policy, predictor.num_layers)
    b = ContinuousBatcher(predictor, ladder, DepthController(len(ladder), None), Metrics(predictor.num_layers),
                          stream_subwords=24, cap=4)
    b.stream_limit = 24  # rows of bucket 32 run as micro-batches ...
    off_ladder = VeePolicy("kl", POLICY["tau"] * 3, 1)
    requests = ([([e], None) for e in encoded] + [([encoded[0], encoded[1]], BudgetPolicy(2))]
                + [([encoded[2]], off_ladder)])
    jobs = [Job(list(rows), policy, 0.0) for rows, policy in requests]
    b.start()
    try:
        def send(part):
            for j in part:
                b.submit(j)
                time.sleep(0.003)
        threads = [threading.Thread(target=send, args=(jobs[k::2],)) for k in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for j in jobs:
            assert j.done.wait(120), "a request was never answered"
        assert b.queued == 0  # every sentence answered and counted out once
        b.stream_limit = 32  # ... and now the windows (rows of 32 subwords) stream
        win = b.submit(Job(list(windows), None, 0.0))
        assert win.done.wait(120) and win.error is None and b.queued == 0
        # the budget rung streamed; the off-ladder policy made no batch
        assert {key[0] for key in b.batches} == {ladder[0].policy, BudgetPolicy(2)}
    finally:
        b.stop()
    assert all(j.error is None for j in jobs)
    for j, (rows, policy) in zip(jobs + [win], requests + [(windows, None)]):
        want = predictor.run_batch(rows, policy or predictor.policy)
        assert [r.exit_layer for r in j.results] == [w.exit_layer for w in want]
        assert [[s[:3] for s in r.spans] for r in j.results] == [[s[:3] for s in w.spans] for w in want]
        assert [r.windows for r in j.results] == [w.windows for w in want]
        assert j.policy_used == (policy or ladder[0].policy)
    assert win.results[0].windows == len(windows)
    assert len({r.exit_layer for j in jobs for r in j.results}) > 1  # sentences leave at different layers
    assert b.stats.layer_calls < b.stats.sentence_layers  # layer calls were shared by several sentences
    assert b.stats.peak_in_flight == 4  # the slots filled up (the rest waited), never past the cap


def test_continuous_batcher_survives_a_failing_round(tiny_workdir, monkeypatch):
    """A layer call that raises answers the requests in flight with the error (once) and the
    worker goes on serving."""
    from vee_jax.batched import ContinuousBatch
    from vee_jax.predict import Predictor
    from vee_jax.serving import ContinuousBatcher, Metrics

    predictor = Predictor.from_workdir(tiny_workdir, policy=POLICY, batch_size=4)
    encoded = predictor.encode([["a", "b", "c"], ["d", "e"]])
    ladder = default_ladder(predictor.policy, predictor.num_layers)
    b = ContinuousBatcher(predictor, ladder, DepthController(len(ladder), None), Metrics(predictor.num_layers))
    real = ContinuousBatch.step
    monkeypatch.setattr(ContinuousBatch, "step", lambda self: (_ for _ in ()).throw(RuntimeError("boom")))
    b.start()
    try:
        bad = b.submit(Job([encoded[0]], None, 0.0))
        assert bad.done.wait(60) and isinstance(bad.error, RuntimeError) and b.queued == 0
        monkeypatch.setattr(ContinuousBatch, "step", real)
        good = b.submit(Job([encoded[1]], None, 0.0))
        assert good.done.wait(60) and good.error is None and len(good.results) == 1 and b.queued == 0
    finally:
        b.stop()


def test_continuous_batcher_stop_answers_what_is_in_flight(tiny_workdir):
    from vee_jax.predict import Predictor
    from vee_jax.serving import ContinuousBatcher, Metrics

    predictor = Predictor.from_workdir(tiny_workdir, policy=POLICY, batch_size=4)
    encoded = predictor.encode([["a", "b", "c"]] * 3)
    ladder = default_ladder(predictor.policy, predictor.num_layers)
    b = ContinuousBatcher(predictor, ladder, DepthController(len(ladder), None), Metrics(predictor.num_layers))
    jobs = [b.submit(Job([e], None, 0.0)) for e in encoded]  # worker not started: they wait in the queue
    got = b._take_all()
    for job, policy, level in got:
        job.policy_used, job.level = policy, level
        b._enqueue(job, policy)
    b._admit()
    assert sum(x.in_flight for x in b.batches.values()) == 3
    b.stop()
    assert all(j.done.is_set() and isinstance(j.error, Overloaded) for j in jobs) and b.queued == 0
