"""allocator.keep_freed_memory: glibc's malloc is tuned once, and the opt-out is honoured."""

from __future__ import annotations

import subprocess
import sys

import pytest

from helpers import ROOT

CHECK = "from vee_jax.allocator import keep_freed_memory as k; print(k(), k())"


def run(env_value: str | None) -> str:
    import os

    env = dict(os.environ)
    env.pop("VEE_JAX_KEEP_MEMORY", None)
    if env_value is not None:
        env["VEE_JAX_KEEP_MEMORY"] = env_value
    out = subprocess.run([sys.executable, "-c", CHECK], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's (Linux)")
def test_settings_apply_once_on_glibc():
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc")
    assert run(None) == "True True"


def test_opt_out():
    assert run("0") == "False False"
