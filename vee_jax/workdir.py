"""The training workdir: saved config, format version, Orbax checkpoints (best and latest), metrics.

Layout::

    workdir/config.json        the full ml_collections config (eval.py needs only --workdir)
    workdir/vee_format.json    {"format_version", "labels", "backbone", "tokenizer", ...}
    workdir/metrics.jsonl      one JSON object per logged step / epoch
    workdir/checkpoints/latest/<step>/   Orbax: {"state", "meta"}
    workdir/checkpoints/best/<step>/

Orbax writes each checkpoint to a temporary folder (``<step>.orbax-checkpoint-tmp``) and renames
it when complete, so a checkpoint half-written by a killed process is never listed as the
latest (the next save of that step removes the leftover). Replacing or dropping a step moves
its folder into ``checkpoints/<which>/replaced/`` with one rename and empties that folder only
after the new checkpoint is complete, so a kill never leaves a half-deleted step either.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp

from .errors import WorkdirError  # noqa: F401  (its old import path: errors.WorkdirError)

FORMAT_VERSION = 1
TRASH = "replaced"  # steps being replaced or dropped are renamed here, then deleted


def save_run_info(workdir: Path, config: ml_collections.ConfigDict, info: dict[str, Any]) -> None:
    """Write config.json and vee_format.json (the facts eval.py checks before loading)."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(config.to_json_best_effort(indent=2, sort_keys=True))
    (workdir / "vee_format.json").write_text(json.dumps({"format_version": FORMAT_VERSION, **info}, indent=2))


def load_run_info(workdir: Path) -> tuple[ml_collections.ConfigDict, dict[str, Any]]:
    """Read what train.py saved; refuse a workdir of an unknown format version."""
    workdir = Path(workdir)
    fmt_file, cfg_file = workdir / "vee_format.json", workdir / "config.json"
    if not fmt_file.exists() or not cfg_file.exists():
        raise WorkdirError(f"{workdir}: not a vee_jax workdir (expected config.json and vee_format.json "
                           f"written by train.py)")
    try:
        info = json.loads(fmt_file.read_text(encoding="utf-8"))
        config = ml_collections.ConfigDict(json.loads(cfg_file.read_text(encoding="utf-8")))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise WorkdirError(f"{workdir}: vee_format.json or config.json is damaged ({e}); retrain into a new "
                           f"--workdir") from None
    version = info.get("format_version") if isinstance(info, dict) else None
    if version != FORMAT_VERSION:
        raise WorkdirError(f"{workdir}: written by workdir format version {version}; this vee_jax reads "
                           f"version {FORMAT_VERSION}. Retrain, or use the vee_jax release that wrote it.")
    return config, info


def append_metrics(workdir: Path, record: dict[str, Any]) -> None:
    with open(workdir / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def checkpoint_manager(workdir: Path, which: str) -> ocp.CheckpointManager:
    """Orbax manager for ``which`` in {"latest", "best"}.

    "latest" keeps two checkpoints, so that re-saving a step (an epoch that ends on a periodic
    save) never leaves the folder without a complete one.
    """
    return ocp.CheckpointManager(
        (Path(workdir) / "checkpoints" / which).absolute(),
        options=ocp.CheckpointManagerOptions(max_to_keep=2 if which == "latest" else 1, create=True,
                                             todelete_subdir=TRASH),
    )


def _empty_trash(mngr: ocp.CheckpointManager) -> None:
    """Delete the steps Orbax moved aside (not step folders: never listed, safe to lose half-way)."""
    shutil.rmtree(Path(mngr.directory) / TRASH, ignore_errors=True)


def save_checkpoint(mngr: ocp.CheckpointManager, step: int, state: Any, meta: dict[str, Any]) -> None:
    """Save ``{"state", "meta"}`` at ``step`` and wait until it is complete on disk.

    A step saved before (mid-epoch) is replaced, since ``meta`` has moved on (epoch end): its
    folder is first renamed aside (atomic), so a kill during the replacement leaves the older
    complete step as the latest, never a half-deleted one.
    """
    _empty_trash(mngr)  # a replaced step left by a killed run would block the rename below
    if step in mngr.all_steps():
        mngr.delete(step)
    mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
              force=True)
    mngr.wait_until_finished()
    _empty_trash(mngr)


def restore_checkpoint(mngr: ocp.CheckpointManager, like: Any, step: int | None = None):
    """Restore ``(state, meta)`` shaped like ``like`` (a state or its abstract shapes); None if empty."""
    step = mngr.latest_step() if step is None else step
    if step is None:
        return None
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    try:
        r = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                       meta=ocp.args.JsonRestore()))
    except ValueError as e:  # Orbax: a shape or tree that differs from the model built now
        # Orbax's first sentence says what differs; the rest suggests options that do not apply here.
        first = (str(e).strip().splitlines() or [type(e).__name__])[0].split(". ")[0].rstrip(".:")
        raise WorkdirError(f"{Path(mngr.directory) / str(step)}: the checkpoint does not match the model built "
                           f"from the workdir's config and backbone ({first}); was the backbone folder "
                           f"replaced?") from None
    return r.state, r.meta
