"""A checkpoint left half-written or half-deleted by a killed process is never taken as the latest.

Real processes killed with SIGKILL at the two moments a checkpoint folder is incomplete: while
Orbax writes a step (its temporary folder, not yet renamed), and while train.py replaces a step
(an epoch end re-saving the step of a mid-epoch checkpoint). The child blocks at that moment
(a patched function prints "blocked" and sleeps) so that the kill lands there every time.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from vee_jax.trained import checkpoint_manager, restore_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]

CHILD = r'''
import shutil, sys, time
from pathlib import Path
import jax.numpy as jnp
from vee_jax.trained import checkpoint_manager, save_checkpoint

wd, mode = Path(sys.argv[1]), sys.argv[2]
mngr = checkpoint_manager(wd, "latest")
save_checkpoint(mngr, 2, {"w": jnp.full((64, 64), 2.0)}, {"step": 2})
if mode == "replace":
    save_checkpoint(mngr, 4, {"w": jnp.full((64, 64), 4.0)}, {"step": 4})

def block():
    print("blocked", flush=True)
    time.sleep(600)

if mode == "save":  # step 4's data is on disk, the step is not committed (renamed) yet
    from orbax.checkpoint._src.path import atomicity
    real_finalize = atomicity.AtomicRenameTemporaryPath.finalize
    async def finalize(self):
        if self._final_path.name == "4":
            block()
        return await real_finalize(self)
    atomicity.AtomicRenameTemporaryPath.finalize = finalize
else:  # "replace": deleting step 4 in place stops half-way (its state is gone, its meta not)
    real_rmtree = shutil.rmtree
    def rmtree(path, *args, **kwargs):
        if Path(path).name == "4":
            real_rmtree(Path(path) / "state")
            block()
        return real_rmtree(path, *args, **kwargs)
    shutil.rmtree = rmtree
    mngr.save = lambda *a, **k: block()  # the replacement save: killed before it completes
save_checkpoint(mngr, 4, {"w": jnp.full((64, 64), 5.0)}, {"step": 4, "epoch_end": True})
print("finished", flush=True)
'''


def _kill_while_blocked(wd: Path, mode: str) -> list[str]:
    """Run CHILD until it blocks, SIGKILL it, return the listing of checkpoints/latest at that moment."""
    p = subprocess.Popen([sys.executable, "-c", CHILD, str(wd), mode], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        assert line.strip() == "blocked", p.stderr.read()[-3000:] if p.poll() is not None else line
        listing = sorted(x.name for x in (wd / "checkpoints" / "latest").iterdir())
    finally:
        p.kill()
        p.wait()
    return listing


@pytest.mark.parametrize("mode", ["save", "replace"])
def test_killed_checkpoint_is_never_the_latest(tmp_path, mode):
    wd = tmp_path / "wd"
    listing = _kill_while_blocked(wd, mode)
    if mode == "save":
        assert "4.orbax-checkpoint-tmp" in listing  # the realistic leftover of a kill mid-save
    like = {"w": jnp.zeros((64, 64))}
    mngr = checkpoint_manager(wd, "latest")
    assert mngr.all_steps() == [2]
    state, meta = restore_checkpoint(mngr, like)
    assert meta == {"step": 2} and np.all(np.asarray(state["w"]) == 2.0)

    # The next save of that step works despite the leftovers, and is then the latest.
    save_checkpoint(mngr, 4, {"w": jnp.full((64, 64), 7.0)}, {"step": 4})
    mngr = checkpoint_manager(wd, "latest")
    assert mngr.all_steps() == [2, 4]
    state, meta = restore_checkpoint(mngr, like)
    assert meta == {"step": 4} and np.all(np.asarray(state["w"]) == 7.0)
    assert sorted(x.name for x in (wd / "checkpoints" / "latest").iterdir()) == ["2", "4"]
