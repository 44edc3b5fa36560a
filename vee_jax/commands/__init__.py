"""The command lines, one module each, over the library (which never imports them).

``train`` (train.py, vee-train), ``eval`` (eval.py, vee-eval), ``predict`` (predict.py,
vee-predict) and ``serve`` (serve.py, vee-serve) read absl flags, make the process-wide
settings (logging, JAX's compilation cache, malloc) and call the library; ``common`` holds
what they share. Commands import nothing from each other (import-linter, pyproject.toml).
Errors a user can fix print one line and exit 2, without a Python traceback.
"""
