"""Serve a trained workdir over HTTP: ``python serve.py --workdir runs/genia --port 8000 [--target-p95-ms 200]``.

``POST /ner`` with ``{"texts": [...]}``; ``GET /health``, ``GET /metrics`` (Prometheus), ``/docs``.
"""

from vee_jax.commands.serve import main

if __name__ == "__main__":
    main()
