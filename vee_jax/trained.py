"""One home for a trained model: the workdir (``Workdir``) and the model loaded from it (``TrainedModel``).

``Workdir`` knows a workdir's files without loading weights: the run info, the run-defining
config fields, the checkpoints and their fingerprint, the sweeps and cache folders, so that a
table-cache hit never loads the model. ``TrainedModel`` loads config, labels, tokenizer and
parameters from it (checked against the backbone it was trained with) and lays the
parameters out once for the inference engine (``prepared``). eval.py, predict.py, serve.py,
the sweeps, the cache and ``bench/`` go through these two.

Layout::

    workdir/config.json        the full ml_collections config (eval.py needs only --workdir)
    workdir/vee_format.json    {"format_version", "labels", "backbone", "tokenizer", ...}
    workdir/metrics.jsonl      one JSON object per logged step / epoch
    workdir/checkpoints/latest/<step>/   Orbax: {"state", "meta"}
    workdir/checkpoints/best/<step>/
    workdir/sweeps/            eval.py --sweep: sweep.csv, figures, Table 1
    workdir/cache/             eval.py --sweep: every exit's tables per split and checkpoint

Orbax writes each checkpoint to a temporary folder (``<step>.orbax-checkpoint-tmp``) and renames
it when complete, so a checkpoint half-written by a killed process is never listed as the
latest (the next save of that step removes the leftover). Replacing or dropping a step moves
its folder into ``checkpoints/<which>/replaced/`` with one rename and empties that folder only
after the new checkpoint is complete, so a kill never leaves a half-deleted step either.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp

from .config import base_config
from .errors import DiskFullError, WorkdirError, is_disk_full

log = logging.getLogger("vee_jax")

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
    try:
        mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
                  force=True)
        mngr.wait_until_finished()
    except Exception as e:
        if not is_disk_full(e):
            raise
        raise _checkpoint_disk_full(mngr, step) from None
    _empty_trash(mngr)


def _checkpoint_disk_full(mngr: ocp.CheckpointManager, step: int) -> DiskFullError:
    """The one-line error of a checkpoint that did not fit: what failed, what was kept.

    Orbax wrote the step under a temporary name, so it is never listed; that folder is removed
    here to give the space back.
    """
    folder = Path(mngr.directory)
    for tmp in folder.glob(f"{step}.orbax-checkpoint-tmp*"):
        shutil.rmtree(tmp, ignore_errors=True)
    _empty_trash(mngr)
    kept = [s for s in ocp.utils.checkpoint_steps(folder) if s != step] if folder.is_dir() else []
    was = (f"the {folder.name} checkpoint of step {max(kept)} is kept, complete" if kept else
           f"no {folder.name} checkpoint was complete before it")
    return DiskFullError(f"{folder}: the disk is full: the checkpoint of step {step} could not be written "
                         f"(its partial files removed); {was}. Free space and run the same command again "
                         f"to resume")


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


# --- the rules of a run ---------------------------------------------------------------------------
# Fields that define a run: resuming with any of them changed would not continue the same run.
RUN_FIELDS = ("seed", "data.format", "data.train", "data.dev", "data.scheme", "data.token_column",
              "data.tag_column", "data.labels", "data.nested", "data.dev_fraction", "data.dev_seed",
              "data.max_subwords", "data.context_subwords", "data.hf_config", "data.hf_tokens_column", "data.hf_tags_column",
              "data.hf_entities_column", "data.tag_names", "model", "optim", "train.epochs", "train.batch_size",
              "train.select_by")


def run_config_changes(old: ml_collections.ConfigDict, new: ml_collections.ConfigDict) -> list[str]:
    """``"field: old -> new"`` for every run-defining field that differs (JSON-normalised)."""
    default = base_config()

    def plain(x):
        return json.loads(json.dumps(x.to_dict() if hasattr(x, "to_dict") else x, default=list))

    def get(c, path):
        d = default  # a field added after the run was saved has its default value there
        for part in path.split("."):
            c = c.get(part, d.get(part) if hasattr(d, "get") else None) if hasattr(c, "get") else None
            d = d.get(part) if hasattr(d, "get") else None
        c, d = plain(c), plain(d)
        if isinstance(c, dict) and isinstance(d, dict):  # a section: its fields added since, at their defaults
            c = {**d, **c}
        return c

    return [f"{f}: {get(old, f)!r} -> {get(new, f)!r}" for f in RUN_FIELDS if get(old, f) != get(new, f)]


def check_tokenizer(workdir: Path, info: dict[str, Any], tokenizer) -> None:
    """Refuse a backbone whose tokenizer is not the one the workdir was trained with.

    The checkpoint's embedding table is indexed by the training tokenizer's ids; another
    vocabulary would feed the model other words without any error. Workdirs written before
    the fingerprint was saved (no ``tokenizer_fingerprint`` in vee_format.json) are not checked.
    """
    from .weights import tokenizer_fingerprint

    saved = info.get("tokenizer_fingerprint")
    if saved is None:
        return
    now = tokenizer_fingerprint(tokenizer)
    if now != saved:
        raise WorkdirError(
            f"{workdir} was trained with a tokenizer of {saved['size']} entries (vocabulary hash {saved['sha1'][:12]}), "
            f"but backbone {info['backbone']!r} now has one of {now['size']} entries (hash {now['sha1'][:12]}): the "
            f"checkpoint's word ids would mean other words; restore the backbone folder it was trained with")


# --- a workdir, weight-free -----------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Workdir:
    """A train.py workdir, read without loading weights (what a table-cache hit needs).

    ``Workdir("runs/demo").labels``; ``.config`` and ``.info`` are read once, on first use.
    """

    path: Path

    def __init__(self, path: str | Path):
        object.__setattr__(self, "path", Path(path).expanduser())

    @functools.cached_property
    def run_info(self) -> tuple[ml_collections.ConfigDict, dict[str, Any]]:
        return load_run_info(self.path)

    @property
    def config(self) -> ml_collections.ConfigDict:
        return self.run_info[0]

    @property
    def info(self) -> dict[str, Any]:
        return self.run_info[1]

    @property
    def labels(self) -> list[str]:
        return list(self.info["labels"])

    @property
    def nested(self) -> bool:
        return bool(self.info["nested"])

    @property
    def num_layers(self) -> int:
        return int(self.info["num_layers"])

    @property
    def sweeps_dir(self) -> Path:
        """Where ``eval.py --sweep`` writes (sweep.csv, figures, Table 1) unless told elsewhere."""
        return self.path / "sweeps"

    @property
    def cache_dir(self) -> Path:
        """Every exit's tables per split and checkpoint (``vee_jax.cache``)."""
        return self.path / "cache"

    def checkpoints(self, which: str) -> ocp.CheckpointManager:
        return checkpoint_manager(self.path, which)

    def checkpoint_fingerprint(self, which: str) -> dict[str, Any]:
        """``{"name", "step", "mtime_ns"}`` of the newest ``which`` checkpoint, from the folder listing only.

        Orbax lists a step only once its folder is complete (renamed from a temporary name), so
        a digit-named folder is a complete step.
        """
        folder = self.path / "checkpoints" / which
        steps = sorted(int(p.name) for p in folder.glob("*") if p.is_dir() and p.name.isdigit()) if folder.is_dir() else []
        if not steps:
            raise WorkdirError(f"{self.path}: no {which} checkpoint in {folder}"
                               + (" (try --checkpoint latest)" if which == "best" else ""))
        step = steps[-1]
        return {"name": which, "step": step, "mtime_ns": (folder / str(step)).stat().st_mtime_ns}


# --- a trained model --------------------------------------------------------------------------------
@dataclasses.dataclass
class TrainedModel:
    """A workdir's model, loaded and checked: ``TrainedModel.load("runs/demo", "best")``.

    ``state`` is the restored training state (``state["params"]``: ``{"encoder", "exits"}``
    stacked as trained); ``prepared`` is the same weights laid out once for the engine
    (``engine.prepare``: one tree per layer and per exit), built on first use.
    """

    workdir: Workdir
    spec: Any  # training.ModelSpec
    state: Any
    tokenizer: Any
    meta: dict[str, Any]  # the checkpoint's step, epoch, ...
    checkpoint: str = "best"

    @classmethod
    def load(cls, workdir: str | Path | Workdir, checkpoint: str = "best") -> "TrainedModel":
        """Restore ``checkpoint`` ("best" or "latest"); WorkdirError when the backbone no longer fits it."""
        import jax.numpy as jnp

        from .training import build_optimizer, build_spec, init_state
        from .weights import BackboneError, load_backbone, param_shapes

        wd = workdir if isinstance(workdir, Workdir) else Workdir(workdir)
        config, info = wd.run_info
        try:
            bert_cfg, encoder_params, tokenizer = load_backbone(info["backbone"], jnp.dtype(config.model.dtype))
        except BackboneError as e:
            raise WorkdirError(f"{wd.path} was trained with backbone {info['backbone']!r}, which cannot be loaded "
                               f"now: {e}") from None
        if bert_cfg.num_layers != info["num_layers"]:
            raise WorkdirError(f"{wd.path} was trained with a {info['num_layers']}-layer backbone, but "
                               f"{info['backbone']} has {bert_cfg.num_layers} layers")
        check_tokenizer(wd.path, info, tokenizer)
        saved = info.get("encoder_shapes")  # absent in workdirs written before it was saved
        if saved is not None and saved != param_shapes(encoder_params):
            now = param_shapes(encoder_params)
            diff = next((k for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k)), "?")
            raise WorkdirError(f"{wd.path} was trained with encoder tensor {diff} of shape {saved.get(diff)}, but "
                               f"backbone {info['backbone']!r} now gives {now.get(diff)}: restore the backbone folder "
                               f"it was trained with")
        spec = build_spec(config, bert_cfg, len(info["labels"]) + 1)
        like = init_state(spec, encoder_params, build_optimizer(config, max(1, info.get("total_steps", 1))),
                          config.seed)
        mngr = wd.checkpoints(checkpoint)
        restored = restore_checkpoint(mngr, like)
        if restored is None:
            raise WorkdirError(f"{wd.path}: no {checkpoint} checkpoint in {mngr.directory}"
                               + (" (try --checkpoint latest)" if checkpoint == "best" else ""))
        state, meta = restored
        log.info("loaded %s checkpoint of %s (step %d, epoch %d)", checkpoint, wd.path, meta["step"], meta["epoch"])
        return cls(wd, spec, state, tokenizer, meta, checkpoint)

    @property
    def config(self) -> ml_collections.ConfigDict:
        return self.workdir.config

    @property
    def info(self) -> dict[str, Any]:
        return self.workdir.info

    @property
    def labels(self) -> list[str]:
        return self.workdir.labels

    @property
    def nested(self) -> bool:
        return self.workdir.nested

    @property
    def params(self) -> Any:
        return self.state["params"]

    @property
    def max_subwords(self) -> int:
        """The subword limit sentences are encoded to: the config's, within the backbone's positions."""
        return min(self.config.data.max_subwords, self.spec.bert.max_position)

    @property
    def context_subwords(self) -> int:
        """Document context the model was trained with (``data.context_subwords``; 0 in workdirs
        written before the field existed): eval and prediction encode rows the same way."""
        return int(self.config.data.get("context_subwords", 0))

    @functools.cached_property
    def prepared(self) -> dict[str, Any]:
        """``engine.prepare``'s inference layout ``{"encoder", "exits"}``, built once."""
        return self.prepared_as("float32")

    def prepared_as(self, weights: str) -> dict[str, Any]:
        """The inference layout with ``weights`` ``"float32"`` (as trained) or ``"int8"``
        (``engine.prepare``), built once per kind and shared by every predictor of this model."""
        from .engine import prepare

        cache = self.__dict__.setdefault("_prepared", {})
        if weights not in cache:
            cache[weights] = prepare(self.spec.bert, self.params["encoder"], self.params["exits"], weights=weights)
        return cache[weights]
