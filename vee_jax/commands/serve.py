"""``python serve.py --workdir runs/genia --port 8000 [--target-p95-ms 200]``.

POST /ner, POST /ner/documents, GET /health, GET /metrics, /docs. With ``--target-p95-ms`` the depth follows the
load (a ladder of exit policies, ``vee_jax.serving``). With ``--api-key-file FILE`` (or the environment variable
``VEE_JAX_API_KEY``) POST /ner, POST /ner/documents and GET /metrics need ``Authorization: Bearer <key>``.
"""

from __future__ import annotations

import logging
import os
from typing import Sequence

from absl import flags

from ..errors import ConfigError
from .common import begin, define_policy_flags, fail, positive_int, user_errors

API_KEY_ENV = "VEE_JAX_API_KEY"

DESCRIPTION = ("Serve a trained workdir over HTTP: POST /ner, POST /ner/documents, GET /health, GET /metrics, /docs. "
               "With --target-p95-ms the depth follows the load (a ladder of exit policies).")


def define_flags() -> flags.FlagValues:
    fv = flags.FlagValues()
    flags.DEFINE_string("workdir", None, "the --workdir given to train.py", flag_values=fv)
    flags.DEFINE_enum("checkpoint", "best", ["best", "latest"], "which checkpoint", flag_values=fv)
    flags.DEFINE_string("host", "127.0.0.1", "the address to listen on (plain HTTP: put a TLS reverse proxy in front "
                                             "of anything but loopback, docs/serving.md)", flag_values=fv)
    flags.DEFINE_string("api_key_file", None,
                        f"a file holding the API key (surrounding whitespace stripped): POST /ner, POST "
                        f"/ner/documents and GET /metrics then need 'Authorization: Bearer <key>' (401 otherwise; "
                        f"/health stays open). Default: the environment variable {API_KEY_ENV}, else no key",
                        flag_values=fv)
    flags.DEFINE_integer("port", 8000, "the port to listen on", flag_values=fv)
    positive_int("batch_size", 32, "at most this many sentences per micro-batch", fv)
    flags.DEFINE_enum("weights", "float32", ["float32", "int8"], "the layers' dense weights: as trained, or int8 "
                      "(about half a layer's time on CPU; a deviation from the paper: docs/performance.md)",
                      flag_values=fv)
    flags.DEFINE_enum("scheduler", "continuous", ["continuous", "micro"],
                      "continuous: sentences join the running continuous batch of their shape between layer calls; "
                      "micro: micro-batches through the whole-batch engine (docs/serving.md)", flag_values=fv)
    flags.DEFINE_float("max_wait_ms", 5.0, "how long a micro-batch waits to fill (--scheduler micro)", lower_bound=0.0,
                       flag_values=fv)
    flags.DEFINE_float("target_p95_ms", None,
                       "latency target: step down the ladder when the p95 latency or the queue's expected wait "
                       "passes it, back up when both fall under half of it (default: off, level 0 only)",
                       flag_values=fv)
    flags.DEFINE_string("ladder", None,
                        "JSON list of policies, deepest first (default: the --strategy policy, then the dev sweep's "
                        "best VEE-KL at average exit layer <= 2M/3, M/2, M/3 when workdir/sweeps/sweep.csv "
                        "exists, else budgets at those layers)", flag_values=fv)
    positive_int("max_texts", 32, "texts per request (413 past it)", fv)
    positive_int("max_chars", 2000, "characters per text (413 past it)", fv)
    positive_int("max_body_bytes", 1 << 20, "request body size (413 past it)", fv)
    positive_int("max_document_chars", 100_000, "POST /ner/documents: characters per request, all documents "
                                                "together (413 past it)", fv)
    positive_int("max_sentences", 256, "POST /ner/documents: sentences per request (413 past it; at most "
                                       "--max-queue)", fv)
    positive_int("max_words", 8192, "POST /ner/documents: words per request (413 past it)", fv)
    flags.DEFINE_enum("sentences", "auto", ["auto", "pysbd", "lines", "lines+pysbd", "zh", "none"],
                      "POST /ner/documents: the default sentence rule (auto: the workdir's data format's)",
                      flag_values=fv)
    positive_int("max_queue", 256, "sentences waiting; past it requests get 503 with Retry-After", fv)
    flags.DEFINE_integer("warmup_subwords", None, "before /health reports ready, compile the ladder's programs on "
                                                  "every batch shape up to this many subwords (default: the model's "
                                                  "limit; 0: ready at once, compile on first use)", lower_bound=0,
                         flag_values=fv)
    flags.DEFINE_enum("word_rule", None, ["ptb", "chars", "whitespace"],
                      "how text is cut into words (default: the rule of the workdir's data format)", flag_values=fv)
    define_policy_flags(fv, "exit policy at level 0, the deepest (default: vee, kl, tau 0.01, patience 2)")
    flags.mark_flag_as_required("workdir", flag_values=fv)
    return fv


def build_ladder(ladder_json: str | None, predictor, sweeps_dir):
    """The ladder of exit policies: ``--ladder``, else from the workdir's sweep, else budgets."""
    from ..serving import default_ladder, ladder_from_sweep, load_ladder

    if ladder_json:
        return load_ladder(ladder_json)
    sweep = sweeps_dir / "sweep.csv"
    if sweep.exists():
        return ladder_from_sweep(sweep, predictor.policy, predictor.num_layers)
    return default_ladder(predictor.policy, predictor.num_layers)


def read_api_key(path: str | None, environ=os.environ) -> str | None:
    """The API key: the file's content (it wins), else ``$VEE_JAX_API_KEY``, else None; whitespace stripped.

    An empty key (an empty file or variable) is a ConfigError: it would open the service to anyone.
    """
    if path:
        key, where = open(path, encoding="utf-8").read().strip(), f"--api-key-file {path}"
    elif API_KEY_ENV in environ:
        key, where = environ[API_KEY_ENV].strip(), f"${API_KEY_ENV}"
    else:
        return None
    if not key:
        raise ConfigError(f"{where}: the API key is empty; write the key there, or give no key to serve without one")
    return key


def main(argv: Sequence[str] | None = None) -> None:
    fv = define_flags()
    # Every program to the persistent cache, the small layer calls too (hundreds, each well under
    # a second): a later start reads them instead of compiling (bench/serve_startup.py).
    begin(fv, "serve.py", DESCRIPTION, argv, cache_min_compile_secs=0.0)
    log = logging.getLogger("vee_jax")
    from ..paths import display_path
    from ..policies import policy_from_input
    from ..predict import Predictor
    from ..serving import Limits, create_app
    from ..trained import TrainedModel

    try:
        api_key = read_api_key(fv.api_key_file)
        model = TrainedModel.load(fv.workdir, fv.checkpoint)
        predictor = Predictor.from_trained(model, policy_from_input(fv), word_rule=fv.word_rule,
                                           batch_size=fv.batch_size, weights=fv.weights)
        if fv.sentences != "auto":  # auto: the workdir's data format's, set by from_trained
            predictor.sentence_rule = fv.sentences
        ladder = build_ladder(fv.ladder, predictor, model.workdir.sweeps_dir)
        limits = Limits(max_texts=fv.max_texts, max_chars=fv.max_chars, max_body_bytes=fv.max_body_bytes,
                        max_queue=fv.max_queue, max_document_chars=fv.max_document_chars,
                        max_sentences=fv.max_sentences, max_words=fv.max_words)
        app = create_app(predictor, ladder=ladder, target_p95_ms=fv.target_p95_ms, limits=limits,
                         max_wait_ms=fv.max_wait_ms, warmup_subwords=fv.warmup_subwords, api_key=api_key,
                         scheduler=fv.scheduler)
    except user_errors() as e:
        fail(e)
    for i, lv in enumerate(ladder):
        log.info("ladder level %d: %s (dev avg exit layer %s, dev F1 %s)", i, lv.policy.to_dict(),
                 lv.avg_exit_layer, lv.f1)
    warm = app.state.warmup
    if not warm.ready:
        log.info("warm-up: compiling %d programs x %d batch shapes (up to %d subwords) in the background; /health "
                 "answers 503 until it is done", warm.programs, warm.shapes, warm.max_subwords)
    import uvicorn

    log.info("serving %s on http://%s:%d (docs: /docs; adaptive depth %s; API key %s)", display_path(fv.workdir),
             fv.host, fv.port, f"on, target p95 {fv.target_p95_ms} ms" if fv.target_p95_ms else "off",
             "required" if api_key else "off")
    uvicorn.run(app, host=fv.host, port=fv.port, log_level="warning", access_log=False)
