"""An HTTP service for NER with early exiting, in parts:

* ``ladder``: the policies the service can run, deepest first (from a sweep, a file, or budgets);
* ``controller``: the ``DepthController`` that picks the level from the load, and the latency window;
* ``batcher``: one queue and one worker thread: the ``ContinuousBatcher`` (the default: sentences join
  the running continuous batches between layer calls) or the ``MicroBatcher`` (micro-batches);
* ``metrics``: the Prometheus metrics (``prometheus_client``), one registry per app;
* ``schemas``: the HTTP API's request and answer types (the requests built per app) and its limits;
* ``warmup``: ``WarmUp``, the ladder's programs compiled on every batch shape before the service is ready;
* ``app``: ``create_app``, which wires them to FastAPI.
"""

from .app import create_app
from .batcher import ContinuousBatcher, Job, MicroBatcher, Overloaded
from .controller import DepthController, LatencyWindow, RateWindow
from .ladder import Level, default_ladder, ladder_from_sweep, load_ladder
from .metrics import LATENCY_BUCKETS, Metrics, ServiceState
from .schemas import (BodyLimit, DocumentEntityOut, DocumentOut, DocumentsRequest, DocumentsResponse, EntityOut,
                      ErrorOut, Limits, NerRequest, NerResponse, ResultOut, SentenceOut, policy_models, request_models)
from .warmup import WarmUp, describe_program, program_text

__all__ = ["LATENCY_BUCKETS", "BodyLimit", "ContinuousBatcher", "DepthController", "DocumentEntityOut", "DocumentOut", "DocumentsRequest",
           "DocumentsResponse", "EntityOut", "ErrorOut", "Job", "LatencyWindow", "Level", "Limits", "RateWindow",
           "Metrics", "MicroBatcher", "NerRequest", "NerResponse", "Overloaded", "ResultOut", "SentenceOut", "ServiceState",
           "WarmUp", "create_app", "default_ladder", "describe_program", "ladder_from_sweep", "load_ladder",
           "policy_models", "program_text", "request_models"]
