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


# --- a full disk ----------------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    """A 600 kB tmpfs (Orbax writes from its own threads: only a real full disk shows what they do)."""
    import subprocess

    where = tmp_path / "disk"
    where.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(where)], capture_output=True,
                       text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {r.stderr.strip()}")
    yield where
    subprocess.run(["umount", "-l", str(where)], capture_output=True)


def test_full_disk_during_a_checkpoint_is_one_line_and_keeps_the_last_one(small_disk):
    import numpy as np

    from vee_jax.errors import DiskFullError

    mngr = checkpoint_manager(small_disk / "wd", "latest")
    rng = np.random.default_rng(0)
    state = {"w": jnp.asarray(rng.random((50, 1000), np.float32))}  # 200 kB, incompressible
    save_checkpoint(mngr, 1, state, {"step": 1})
    big = {"w": jnp.asarray(rng.random((150, 1000), np.float32))}  # 600 kB: does not fit beside step 1
    with pytest.raises(DiskFullError) as e:
        save_checkpoint(mngr, 2, big, {"step": 2})
    msg = str(e.value)
    assert "\n" not in msg
    assert msg == (f"{small_disk / 'wd' / 'checkpoints' / 'latest'}: the disk is full: the checkpoint of step 2 "
                   f"could not be written (its partial files removed); the latest checkpoint of step 1 is kept, "
                   f"complete. Free space and run the same command again to resume")
    assert sorted(p.name for p in (small_disk / "wd" / "checkpoints" / "latest").iterdir()) == ["1"]
    restored, meta = restore_checkpoint(mngr, state)
    np.testing.assert_array_equal(np.asarray(restored["w"]), np.asarray(state["w"]))
    assert meta == {"step": 1}


def test_full_disk_during_the_table_cache_is_one_line(small_disk):
    import numpy as np

    from vee_jax.cache import _write_npz
    from vee_jax.errors import DiskFullError

    path = small_disk / "cache" / "test-best-1-abc.npz"
    with pytest.raises(DiskFullError, match=r"test-best-1-abc\.npz: the disk is full: this cache could not be "
                                            r"written \(its partial file removed"):
        _write_npz(path, {"probs_0": np.random.default_rng(0).random((200, 1000), np.float32)})
    assert list(path.parent.iterdir()) == []


def test_full_disk_through_a_command_prints_one_line(small_disk):
    """Orbax logs its writer threads' tracebacks through absl; a command shows only its one line."""
    script = ("import sys\nimport numpy as np, jax.numpy as jnp\n"
              "from vee_jax.commands.common import fail, setup_logging, user_errors\n"
              "from vee_jax.trained import checkpoint_manager, save_checkpoint\n"
              "setup_logging()\n"
              "m = checkpoint_manager(sys.argv[1], 'latest')\n"
              "w = jnp.asarray(np.random.default_rng(0).random((200, 1000), np.float32))\n"
              "try:\n    save_checkpoint(m, 3, {'w': w}, {'step': 3})\n"
              "except user_errors() as e:\n    fail(e)\n")
    r = subprocess.run([sys.executable, "-c", script, str(small_disk / "wd")], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 2, r.stderr[-3000:]
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert lines == [f"error: {small_disk / 'wd' / 'checkpoints' / 'latest'}: the disk is full: the checkpoint of "
                     f"step 3 could not be written (its partial files removed); no latest checkpoint was complete "
                     f"before it. Free space and run the same command again to resume"], r.stderr
