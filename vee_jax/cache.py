"""The offline path's cache: every exit's probability tables of a split, computed once per checkpoint.

``all_exit_logits`` (through ``training.eval_step``) and a softmax run once over a split; the
tables are saved in the workdir and every later sweep reads them instead of running BERT::

    workdir/cache/<split>-<checkpoint>-<step>-<key hash>.npz
        probs_<i>   float32 [M, n_i, n_i, K]  sentence i of the split (data order), its real words
        lengths     int32 [N]                 n_i
        key         the JSON key below

(the layout of ``eval.py --dump-tables``). The key names what the tables depend on: the
checkpoint (name, step, and the modification time of its step folder, so that a run retrained
into the same workdir is not mistaken for the old one at the same step), the data (the split's
file: absolute path, size, modification time; the held-out fraction and seed when dev is cut
out of train), and what shapes the tables (backbone, tokenizer, pooling, max_subwords, the label
set, the storage dtype; with document context its size and a JSON split's ``.doc_ids.txt``). A cache whose stored key differs is rebuilt, and building a split's
cache deletes that split's older caches of the same checkpoint name (stale steps).

Files are written to a temporary name and renamed, so a crash never leaves a half-written cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .errors import CacheError, DiskFullError, is_disk_full  # noqa: F401  (CacheError: its old import path)
from .trained import Workdir

log = logging.getLogger("vee_jax")

CACHE_VERSION = 2  # 2: sentences past the subword limit are windowed, no longer truncated


# --- the key ------------------------------------------------------------------------------------
def _file_fingerprint(path: str | Path) -> dict[str, Any]:
    p = Path(path).expanduser().resolve()
    if not p.exists():
        raise CacheError(f"data file {p} does not exist")
    st = p.stat()
    return {"path": str(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _source_fingerprint(data_cfg: Any, path: str | Path) -> dict[str, Any]:
    """A data file's fingerprint; for ``hf``, the dataset's: every file of a save_to_disk folder
    (``FOLDER:SPLIT`` adds the split), or the name alone of a ``hub:`` set."""
    if data_cfg.get("format") != "hf":
        return _file_fingerprint(path)
    spec = str(path)
    if spec.startswith("hub:"):
        return {"hub": spec, "config": data_cfg.get("hf_config", "")}
    split = None
    if not Path(spec).expanduser().exists() and ":" in spec:
        spec, _, split = spec.rpartition(":")
    p = Path(spec).expanduser().resolve()
    if not p.is_dir():
        return {**_file_fingerprint(p), "split": split}
    files = [[str(f.relative_to(p)), f.stat().st_size, f.stat().st_mtime_ns] for f in sorted(p.rglob("*")) if f.is_file()]
    return {"path": str(p), "split": split, "files": files}


def data_fingerprint(data_cfg: Any, split: str) -> dict[str, Any]:
    """What a split's sentences depend on (mirrors ``data.splits.load_split``)."""
    fp: dict[str, Any] = {"split": split, "format": data_cfg.get("format"),
                          "scheme": data_cfg.get("scheme"), "token_column": data_cfg.get("token_column"),
                          "tag_column": data_cfg.get("tag_column"), "lenient": data_cfg.get("lenient", False)}
    if data_cfg.get("format") == "hf":
        fp["hf"] = {k: data_cfg.get(k) for k in ("hf_tokens_column", "hf_tags_column", "hf_entities_column",
                                                  "hf_doc_id_column")}
        fp["hf"]["tag_names"] = list(data_cfg.get("tag_names") or ())
    path = data_cfg.get(split) or ""
    held_out = not data_cfg.get("dev") and data_cfg.get("dev_fraction", 0.0) > 0
    if split == "dev" and not path and held_out:
        fp["file"] = _source_fingerprint(data_cfg, data_cfg.train)
        fp["held_out"] = [data_cfg.dev_fraction, data_cfg.get("dev_seed", 0)]
    elif not path:
        raise CacheError(f"config.data.{split} is empty: there is no {split} split to cache")
    else:
        fp["file"] = _source_fingerprint(data_cfg, path)
        if split == "train" and held_out:
            fp["held_out"] = [data_cfg.dev_fraction, data_cfg.get("dev_seed", 0)]
    return fp


def table_key(workdir: str | Path, checkpoint: str, config: Any, info: dict[str, Any], split: str,
              dtype: str = "float32") -> dict[str, Any]:
    """The cache key of a split's tables (see the module docstring)."""
    key = {
        "version": CACHE_VERSION,
        "checkpoint": Workdir(workdir).checkpoint_fingerprint(checkpoint),
        "data": data_fingerprint(config.data, split),
        "model": {"backbone": str(info.get("backbone")), "tokenizer": str(info.get("tokenizer")),
                  "pooling": config.model.get("pooling", "first"), "max_subwords": config.data.get("max_subwords"),
                  "labels": list(info.get("labels", ())), "num_layers": info.get("num_layers")},
        "dtype": dtype,
    }
    context = config.data.get("context_subwords", 0)
    if context:  # absent when 0: the keys of caches built before the field existed still match
        key["model"]["context_subwords"] = context
        key["data"]["doc_ids"] = _doc_ids_fingerprint(config.data, split)
    return key


def _doc_ids_fingerprint(data_cfg: Any, split: str) -> dict[str, Any] | None:
    """The ``.doc_ids.txt`` file beside a JSON split (``readers.doc_ids_file``), which gives its documents."""
    from .data.readers import doc_ids_file

    path = data_cfg.get(split) or data_cfg.get("train")
    side = doc_ids_file(path) if data_cfg.get("format") == "json" and path else None
    return _file_fingerprint(side) if side is not None and side.is_file() else None


def key_hash(key: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]


def table_cache_path(workdir: str | Path, key: dict[str, Any]) -> Path:
    ck = key["checkpoint"]
    return Workdir(workdir).cache_dir / f"{key['data']['split']}-{ck['name']}-{ck['step']}-{key_hash(key)}.npz"


# --- load or build ------------------------------------------------------------------------------
def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if not is_disk_full(e):
            raise
        raise DiskFullError(f"{path}: the disk is full: this cache could not be written (its partial file "
                            f"removed; the caches already there are kept). Free space, or point the sweep's "
                            f"workdir elsewhere, and run again") from None
    os.replace(tmp, path)


def read_npz(path: Path, key: dict[str, Any]) -> dict[str, np.ndarray] | None:
    """The arrays of ``path`` when it exists and holds exactly ``key``; else None."""
    if not path.exists():
        return None
    try:
        with np.load(path) as z:
            if json.loads(str(z["key"])) != json.loads(json.dumps(key)):
                return None
            return {k: z[k] for k in z.files if k != "key"}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as e:
        log.warning("ignoring unreadable cache %s (%s)", path, e)
        return None


def load_or_build_npz(path: Path, key: dict[str, Any], build: Callable[[], dict[str, np.ndarray]],
                      stale_glob: str | None = None) -> tuple[dict[str, np.ndarray], bool]:
    """``(arrays, reused)``: ``path``'s arrays when its stored key equals ``key``, else ``build()``'s,
    saved to ``path`` with the key. ``stale_glob``: other files in the folder to delete on a rebuild."""
    arrays = read_npz(path, key)
    if arrays is not None:
        return arrays, True
    arrays = build()
    if stale_glob:
        for old in path.parent.glob(stale_glob):
            if old != path:
                log.info("removing stale cache %s", old)
                old.unlink(missing_ok=True)
    _write_npz(path, {**arrays, "key": np.asarray(json.dumps(key))})
    return arrays, False


def load_or_build_tables(
    workdir: str | Path, key: dict[str, Any], build: Callable[[], Sequence[np.ndarray]],
) -> tuple[list[np.ndarray], bool, Path]:
    """A split's tables: ``(tables [N] of float32 [M, n_i, n_i, K], reused, path)``.

    ``key`` from ``table_key``; ``build()`` returns the tables (float32) when the cache is missing
    or stale, e.g. ``lambda: build_tables(state, spec, encoded)``. They are stored in
    ``key["dtype"]`` (float16 halves the file at the cost of ~1e-3 relative rounding).
    """
    path = table_cache_path(workdir, key)
    dtype = np.dtype(key.get("dtype", "float32"))

    def _build():
        tables = list(build())
        arrays = {f"probs_{i}": np.asarray(t, dtype) for i, t in enumerate(tables)}
        arrays["lengths"] = np.asarray([t.shape[1] for t in tables], np.int32)
        return arrays

    ck = key["checkpoint"]
    arrays, reused = load_or_build_npz(path, key, _build, stale_glob=f"{key['data']['split']}-{ck['name']}-*.npz")
    n = len(arrays["lengths"])
    return [np.asarray(arrays[f"probs_{i}"], np.float32) for i in range(n)], reused, path


def build_tables(state: Any, spec: Any, encoded: Sequence[Any], batch_size: int = 32, *,
                 progress: bool = False) -> list[np.ndarray]:
    """Every exit's probability table of each sentence: float32 [M, n_i, n_i, K], data order.

    One ``eval_step`` (``all_exit_logits`` + softmax) per batch, the batches of
    ``evaluate_policy``'s offline replay. ``encoded``: rows; a windowed sentence's tables are
    merged exit by exit (``windows.merge_tables``) into one over all its words.
    """
    from .data.features import iterate_batches
    from .training import eval_step
    from .windows import Gather, merge_tables

    gather = Gather([e.offset for e in encoded])
    tables: list[np.ndarray | None] = [None] * len(gather.groups)
    batches = iterate_batches(encoded, batch_size)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(list(batches), desc="exit tables", unit="batch", leave=False)
    for idx, batch in batches:
        probs = np.asarray(eval_step(state, batch, spec=spec))  # [M, B, L, L, K]
        for r, i in enumerate(idx):
            n = int(batch["lengths"][r])
            for s, got in gather.add(i, np.ascontiguousarray(probs[:, r, :n, :n], np.float32)):
                rows = [encoded[j] for j in gather.groups[s]]
                words = rows[0].num_words if len(rows) > 1 else n
                tables[s] = merge_tables(got, [e.window for e in rows], words)
    return tables  # type: ignore[return-value]


__all__ = ["CacheError", "build_tables", "data_fingerprint", "load_or_build_npz",
           "load_or_build_tables", "read_npz", "table_cache_path", "table_key"]
