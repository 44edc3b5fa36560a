"""Batched early exiting where exited sentences stop costing compute (continuous batching).

``engine.vee_infer`` runs a batch in one ``lax.while_loop`` until its slowest sentence exits,
so at batch 32 a batch costs about as much as the full model. ``batched_infer`` instead drives
the layers from the host, one jitted ``pool_layer_step`` (the layer, its exit, softmax) and
one ``pool_vote_step`` call per (layer, batch) (none before layer patience + 1, where no vote
can pass; ``pool_write`` keeps the state of the sentences that go on), and refills every batch
with sentences that are still running:

- Sentences are grouped by their padded shape (T, L) (``_groups``: T the subword bucket, L the
  word bucket of the group's longest sentence, both of ``data.features``' finer ``FINE_*``
  buckets: every row pays its own padding at every layer). Each group has a queue per layer m (0-based):
  the sentences whose next layer is m. Queue 0 holds the sentences not yet started.
- **The rule**, one group at a time: (1) if a queue m >= 1 holds at least ``batch_size``
  sentences, run ``batch_size`` of them from the *deepest* such queue; (2) else, while queue 0
  is not empty, start ``batch_size`` new sentences (embedding and layer 1); (3) else (the
  group's tail) run the *lowest* non-empty queue, so that its survivors join the next queue and
  the tail sweeps forward in as few calls as there are layers left. Rule 1 keeps at most
  ``(M - 1) * (batch_size - 1) + batch_size`` sentences in flight, so the per-sentence state
  lives in a fixed pool of ``M * batch_size`` slots per group whatever the data size; rules 1
  and 2 run full batches, and padding is only paid at a group's tail.
- One group is a ``ContinuousBatch``: sentences are admitted into free slots while it runs.
  ``batched_infer`` admits a batch of new sentences when rule 2 is next; the service
  (``serving.ContinuousBatcher``) admits arrivals between layer calls and replaces rules 2 and 3
  by "the queue whose first sentence has waited longest" (``oldest_first``), so that under a
  steady stream of arrivals no sentence waits for its queue to fill.
- A batch of n sentences is padded to the smallest size >= n in ``batch_sizes(batch_size)``
  (the powers of two below ``batch_size`` with the half-way points from 12, and ``batch_size``):
  ``pool_layer_step`` compiles
  at most twice per (shape, padded batch size) (layer 1 embeds first), for all layers (their
  weights are arguments); the vote at layer m reads only the m earlier tables (with their KL
  self terms), so it compiles per (shape, padded size, m), a small program. Tau and patience
  are traced, but patience also decides which layers vote at all (none before patience + 1),
  so a smaller patience can compile the vote programs of earlier layers the first time.
  Padding rows have an all-zero ``attention_mask`` and length 0; their outputs are never read.
- After each call, a sentence whose ``stop`` is set records its exit (layer m's table, or with
  ``policy.ensemble`` the mean of the tables of layers 1..m as in ``vee_infer``), the others
  move to queue m + 1, their new hidden state and table (VEE) kept in the group's pools on the
  device, their table added to their running sum (ensemble, on the host). So no sentence runs a layer past its exit,
  and the decisions are those of ``vee_infer`` on each sentence alone (tested).
- Why it is fast (bench/latency.py, README "Performance"): a vote over all M history slots,
  as ``vee_infer`` carries them, cost about a layer at batch 32 and 96 words; over the m
  earlier tables with cached KL self terms it costs a tenth of that. Per-sentence state stays
  on the device, in pools updated in place (donated), so the host copies only inputs, slots
  and each call's tables. The commands also keep freed memory (``allocator.keep_freed_memory``,
  called by eval.py, predict.py, serve.py and the benchmarks, never by this library): with
  glibc's defaults every per-layer call page-faulted its temporaries in again (a layer cost
  1.24x what it costs inside one call).

A policy whose exit does not depend on the tables (``Policy.fixed_exit``: ``full``, ``budget``)
exits every sentence at the same layer without ensemble, so nothing is gained by scheduling:
it runs ``vee_infer`` on whole batches. The scheduler asks the policy, never its kind:
``fixed_exit``, ``needs_history`` / ``history_kl`` (the pools it keeps), ``earliest_stop`` (the
first layer worth a vote) and ``stop`` (through ``policies.vote_step``).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections import Counter
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from . import engine
from .bert import BertConfig, attention_bias, embed, transformer_layer
from .data.features import FINE_SUBWORD_BUCKETS, FINE_WORD_BUCKETS, Encoded, bucket, collate
from .exits import biaffine, exit_inputs
from .measures import kl_self_term
from .policies import Policy, check_policy, vote_step

_TOKEN_KEYS = ("input_ids", "attention_mask", "token_type_ids")
_WORD_KEYS = ("word_index", "word_mask")


@dataclasses.dataclass
class BatchStats:
    """What a ``batched_infer`` run computed.

    layer_calls: layer executions on a padded batch (one ``pool_layer_step`` call each; with
      the ``vee_infer`` path of full/budget, the layers each batch ran).
    embed_calls: embedding calls (one per batch of new sentences).
    sentence_layers: layers run by real sentences (= the sum of their exit layers).
    padded_sentence_layers: layers run by padding rows (wasted compute).
    batch_sizes: padded batch size -> number of layer calls at that size.
    shapes: the (T, L) groups, in the order they ran.
    peak_in_flight: the most sentences of one group started and not yet exited at once.
    """

    layer_calls: int = 0
    embed_calls: int = 0
    sentence_layers: int = 0
    padded_sentence_layers: int = 0
    batch_sizes: Counter = dataclasses.field(default_factory=Counter)
    shapes: list = dataclasses.field(default_factory=list)
    peak_in_flight: int = 0

    def _count(self, n: int, size: int, layers: int = 1) -> None:
        self.layer_calls += layers
        self.sentence_layers += n * layers
        self.padded_sentence_layers += (size - n) * layers
        self.batch_sizes[size] += layers


def batch_sizes(batch_size: int) -> tuple[int, ...]:
    """The padded batch sizes used: powers of two below ``batch_size`` and, from 12, the half-way
    points 1.5 x 2^k (a group's tail of 17 rows runs at 24, not 32: bench/predictor.py), then
    ``batch_size``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    sizes = {batch_size}
    p = 1
    while p < batch_size:
        sizes.add(p)
        if p >= 8 and 3 * p // 2 < batch_size:
            sizes.add(3 * p // 2)
        p *= 2
    return tuple(sorted(sizes))


def _pad_to(n: int, sizes: Sequence[int]) -> int:
    return next(s for s in sizes if s >= n)


def _groups(encoded: Sequence[Encoded]) -> dict[tuple[int, int], list[int]]:
    """(T, L) -> the indices of its sentences, in input order: one group per subword bucket T
    (``FINE_SUBWORD_BUCKETS``).

    L is the word bucket of the group's longest sentence, not ``words_for(T)`` (room for T - 2
    words): exits and votes cost L^2 per sentence, and on GENIA the 96-subword group has at
    most 63 words, so L = 64 instead of 96 (2.25x fewer cells).
    """
    by_T: dict[int, list[int]] = {}
    for i, e in enumerate(encoded):
        by_T.setdefault(bucket(len(e.input_ids), FINE_SUBWORD_BUCKETS), []).append(i)
    return {(T, bucket(max(max(encoded[i].length for i in members), 1), FINE_WORD_BUCKETS)): members
            for T, members in sorted(by_T.items())}


def whole_batches(encoded: Sequence[Encoded], batch_size: int) -> list[tuple[list[int], dict]]:
    """``(indices, data.collate batch)`` for whole batches of ``batched_infer``'s groups, in order.

    Up to ``batch_size`` sentences of one (T, L) group (``_groups``) each, padded to the
    smallest size in ``batch_sizes(batch_size)``: what ``batched_infer`` runs through
    ``vee_infer`` for policies that exit every sentence at the same layer, and the whole-batch
    reference in bench/latency.py.
    """
    sizes = batch_sizes(batch_size)
    return [(chunk, collate([encoded[i] for i in chunk], shape, _pad_to(len(chunk), sizes)))
            for shape, members in _groups(encoded).items()
            for chunk in (members[k:k + batch_size] for k in range(0, len(members), batch_size))]


def _result(table: np.ndarray, n: int, layer: int, votes: int) -> dict[str, Any]:
    return {"probs": np.array(table[:n, :n], np.float32), "exit_layer": int(layer), "votes": int(votes)}


def batched_infer(
    config: BertConfig,
    model: dict,
    encoded: Sequence[Encoded],
    policy: Policy,
    *,
    batch_size: int = 32,
    pooling: str = "first",
) -> tuple[list[dict[str, Any]], BatchStats]:
    """Early-exit inference of ``encoded`` in batches that drop sentences as they exit.

    Args:
      config: the encoder's ``BertConfig``.
      model: ``engine.prepare(config, params, exit_params)``.
      encoded: the sentences (``data.features.Encoded``).
      policy: any ``policies`` policy.
      batch_size: the largest batch of one layer call (B).
      pooling: "first" or "mean" subword -> word (as in training).
    Returns:
      ``(results, stats)``: ``results[i]`` for ``encoded[i]`` is ``{"probs": [n_i, n_i, K]
      float32`` the table at the exit (the ensemble mean with ``policy.ensemble``),
      ``"exit_layer": int`` 1-based, ``"votes": int`` VEE's count at the exit (0 for other
      policies)``}``; ``stats`` a ``BatchStats``.

    Process-wide settings are the caller's: a command that runs this often should call
    ``allocator.keep_freed_memory()`` first (eval.py, predict.py and serve.py do).

    Cost of one layer call at layer m (b real sentences padded to B' rows; shape (T, L), d
    hidden, K classes): one ``pool_layer_step`` (gathers the rows' hidden states from the pool,
    or embeds at layer 1; the layer, its exit, softmax, KL self terms), one ``pool_vote_step``
    (the vote against the m earlier tables of those rows; skipped while m < patience) and one
    ``pool_write`` (the new hidden states, tables and KL self terms into the pools, in place;
    not at the last layer); on the host, a numpy gather of the b rows' inputs into fresh arrays (T x 3 + L x 2 ints), one
    ``device_put`` of them with the slots, one ``device_get`` of the tables [B', L, L, K] and
    two [B'] vectors. Python work per sentence is only its result (a copy of its [n, n, K]
    table).
    """
    M = config.num_layers
    check_policy(policy, M)
    stats = BatchStats()
    results: list[dict[str, Any] | None] = [None] * len(encoded)
    if not encoded:
        return [], stats
    sizes = batch_sizes(batch_size)
    groups = _groups(encoded)

    if policy.fixed_exit(M, policy.knobs()) is not None and not policy.ensemble:
        stats.shapes.extend(groups)
        for chunk, batch in whole_batches(encoded, batch_size):
            out = jax.device_get(engine.vee_infer(config, model["encoder"], model["exits"], batch, policy,
                                                  pooling=pooling))
            stats.embed_calls += 1
            stats._count(len(chunk), len(batch["input_ids"]), int(out["layers_run"]))
            stats.peak_in_flight = max(stats.peak_in_flight, len(chunk))
            for r, i in enumerate(chunk):
                results[i] = _result(out["probs"][r], encoded[i].length, out["exit_layer"][r], out["votes"][r])
        return results, stats

    static, knobs = engine.traced_policy(policy)
    # The steps never read ``ensemble`` (the mean is taken here): one compilation for both.
    step_policy = dataclasses.replace(static, ensemble=False)
    def on_exit(i, table, layer, votes):
        results[i] = {"probs": table, "exit_layer": int(layer), "votes": int(votes)}

    for shape, members in groups.items():
        stats.shapes.append(shape)
        # Rule 1 keeps at most (M - 1)(B - 1) + B <= M * B sentences in flight.
        group = ContinuousBatch(config, model, shape, step_policy, knobs, policy.ensemble, pooling, batch_size,
                                sizes, stats, on_exit, cap=min(len(members), M * batch_size),
                                earliest_stop=policy.earliest_stop())
        pending = list(reversed(members))
        while pending or group.busy:
            if pending and group.wants_new():  # rule 2 is next: its batch of new sentences
                take = [pending.pop() for _ in range(min(batch_size, len(pending)))]
                group.admit(take, [encoded[i] for i in take])
            group.step()
    return results, stats


@functools.partial(jax.jit, static_argnames=("config", "pooling", "start", "kl", "head"))
def pool_layer_step(config: BertConfig, embeddings: dict, layer: dict, exit: dict, pool: jax.Array, slots: jax.Array,
                    inputs: dict, *, pooling: str, start: bool, kl: bool, head: bool = True):
    """One layer and its exit on the rows ``slots`` of a device-resident pool of hidden states.

    pool: [C, T, d] the hidden states of the group's sentences in flight (read only);
    slots: [B'] int32 their rows (C for padding rows: read clamped); embeddings: the encoder
    without its layers (``embed``'s weights); layer, exit: that layer's weights (arguments,
    so one compilation serves all layers); ``start``: embed the inputs instead of reading the
    pool (layer 1); ``kl``: also the tables' ``measures.kl_self_term`` (VEE with KL); ``head``:
    run the exit (False: a layer whose table nobody reads, e.g. below a budget). Returns
    ``(hidden [B', T, d], probs [B', L, L, K] or None, kl_m [B'] or None)``.
    """
    if start:
        hidden = embed(config, embeddings, inputs["input_ids"], inputs["attention_mask"], inputs.get("token_type_ids"))
    else:
        hidden = jnp.take(pool, slots, axis=0, mode="clip")
    hidden = transformer_layer(config, layer, hidden, attention_bias(inputs["attention_mask"], hidden.dtype))
    if not head:
        return hidden, None, None
    probs = jax.nn.softmax(biaffine(exit, *exit_inputs(hidden, inputs, pooling)).astype(jnp.float32), axis=-1)
    return hidden, probs, kl_self_term(probs, inputs["lengths"]) if kl else None


@functools.partial(jax.jit, static_argnames=("policy", "m", "num_layers"))
def pool_vote_step(policy: Policy, tables: jax.Array | None, kl: jax.Array | None, slots: jax.Array,
                   probs: jax.Array, lengths: jax.Array, knobs: dict, *, m: int, num_layers: int):
    """The vote at layer m against the m earlier tables of the rows ``slots`` in the pool.

    tables: [M-1, C, L, L, K] the pool of earlier tables and kl: [M-1, C] their
    ``measures.kl_self_term`` (KL only, else None), read only; slots [B'] as in
    ``pool_layer_step``; probs [B', L, L, K] layer m's tables; lengths [B']. Only tables[:m]
    of those rows are read (at m = 0 one unread table), so an early layer pays for few
    comparisons; m is static (one small program per layer). Returns ``(stop [B'], count [B'])``.
    """
    if tables is None:
        return vote_step(policy, None, probs, m, lengths, num_layers=num_layers, knobs=knobs)
    E = max(m, 1)
    earlier = jnp.take(tables[:E], slots, axis=1, mode="clip")  # [E, B', L, L, K]
    earlier_kl = None if kl is None else jnp.take(kl[:E], slots, axis=1, mode="clip")
    return vote_step(policy, earlier, probs, m, lengths, num_layers=num_layers, knobs=knobs, history_kl=earlier_kl)


@functools.partial(jax.jit, donate_argnames=("pool", "tables", "kl"))
def pool_write(pool: jax.Array, tables: jax.Array | None, kl: jax.Array | None, slots: jax.Array, hidden: jax.Array,
               probs: jax.Array, kl_m: jax.Array | None, m: jax.Array):
    """Layer m's hidden states, tables and KL self terms into the pools' rows ``slots``, in place.

    The pools are donated, and this call only writes: a call that also read them made XLA copy
    the whole table pool (42 MB at L = 48) to keep the reads safe. Rows of slot C (padding) are
    dropped; m (traced: one compilation for all layers) is the layer. Returns the pools
    ``(pool, tables, kl)``.
    """
    pool = pool.at[slots].set(hidden, mode="drop")
    if tables is not None:
        tables = tables.at[m, slots].set(probs, mode="drop")
    if kl is not None:
        kl = kl.at[m, slots].set(kl_m, mode="drop")
    return pool, tables, kl


class ContinuousBatch:
    """The continuous batch of one (T, L) shape: slots, per-layer queues, device pools.

    Sentences are admitted (``admit``) while it runs, each into a free slot, and leave it at
    their exit (``on_exit(key, table [n, n, K], exit layer, votes)``); ``step`` runs one layer call
    under the rule of the module docstring. ``batched_infer`` admits a batch of new sentences
    when the rule would start them; the service (``serving.batcher``) admits arrivals between
    layer calls. Per-sentence state lives on the device, in pools of ``cap`` rows updated in
    place by ``pool_write``: hidden states [cap, T, d], and for VEE the earlier tables [M-1, cap,
    L, L, K] with their KL self terms. The host holds the inputs (by slot), the queues of slots
    and (ensemble) the running sums, and reads back only each call's tables and decisions.
    """

    def __init__(self, config, model, shape, step_policy, knobs, ensemble, pooling, batch_size, sizes, stats,
                 on_exit, *, cap: int, earliest_stop: int = 0, oldest_first: bool = False, ticks=None):
        self.config, self.model, self.policy, self.knobs = config, model, step_policy, knobs
        self.ensemble, self.pooling, self.B, self.sizes = ensemble, pooling, batch_size, sizes
        self.stats, self.on_exit = stats, on_exit
        self.earliest_stop = earliest_stop  # no stop can pass before (VEE: layer patience + 1, count <= m)
        self.M = config.num_layers
        self.shape = shape
        self.history = step_policy.needs_history
        self.K = model["exits"][0]["b"].shape[-1]
        self.cap = cap
        self.free = list(range(cap - 1, -1, -1))
        self.key: list[Any] = [None] * cap  # the caller's key of the sentence in each slot
        self.lengths = np.zeros(cap, np.int32)
        self.inputs: dict[str, np.ndarray] | None = None  # by slot, allocated at the first admission
        T, L = shape
        # Every array a call takes is committed to the weights' device: jit's cache keys on
        # whether an argument is committed, and fresh uncommitted pools (a batch made again after
        # ``max_idle_batches`` dropped it) compiled pool_write anew on the request path.
        self.device = next(iter(jax.tree_util.tree_leaves(model["encoder"])[0].devices()))
        zeros = lambda shape, dtype: jax.device_put(jnp.zeros(shape, dtype), self.device)
        self.pool = zeros((cap, T, config.hidden_size), config.jnp_dtype)
        E = max(self.M - 1, 1)  # layer m's table waits for the votes of layers m+1..M-1
        self.tables = zeros((E, cap, L, L, self.K), jnp.float32) if self.history else None
        self.kl = zeros((E, cap), jnp.float32) if self.history and step_policy.history_kl else None
        self.acc = np.zeros((cap, L, L, self.K), np.float32) if ensemble else None
        self.queues: list[list[int]] = [[] for _ in range(self.M)]  # slots whose next layer is m
        # oldest_first (the service): past a full batch, run the queue whose head has waited
        # longest, so that a sentence never waits for its queue to fill while arrivals keep coming.
        self.oldest_first = oldest_first
        self.since = np.zeros(cap, np.int64)  # when each slot joined its queue (a counter)
        # ticks: a counter shared by several batches (the service), so that their waits compare
        self._ticks = ticks if ticks is not None else itertools.count()
        # What ``embed`` reads: not the layers (fewer arguments to hand over at every call).
        self.embeddings = {k: v for k, v in model["encoder"].items() if k != "layers"}

    @property
    def busy(self) -> bool:
        """Whether a sentence is waiting for a layer."""
        return any(self.queues)

    @property
    def in_flight(self) -> int:
        return self.cap - len(self.free)

    def wants_new(self) -> bool:
        """Whether the rule would start new sentences now (no full queue past layer 1, none waiting
        to start): ``batched_infer`` admits its next batch then, which keeps the in-flight bound."""
        return not self.queues[0] and not any(len(q) >= self.B for q in self.queues[1:])

    def admit(self, keys: Sequence[Any], rows: Sequence[Encoded]) -> None:
        """Sentences ``rows`` (of this shape) into free slots, waiting for layer 1; at most ``len(free)``."""
        n = len(rows)
        if n > len(self.free):
            raise ValueError(f"{n} sentences for {len(self.free)} free slots")
        batch = collate(rows, self.shape, n)
        if self.inputs is None:
            self.inputs = {k: np.zeros((self.cap,) + batch[k].shape[1:], batch[k].dtype)
                           for k in self._input_keys("word_shape" in batch)}
        slots = [self.free.pop() for _ in range(n)]
        for k, dst in self.inputs.items():
            dst[slots] = batch[k]
        self.lengths[slots] = batch["lengths"]
        for slot, key in zip(slots, keys):
            self.key[slot] = key
        self._queue(0, slots)
        self.stats.peak_in_flight = max(self.stats.peak_in_flight, self.in_flight)

    def _input_keys(self, casing: bool) -> tuple[str, ...]:
        """The collated inputs a layer call reads (``word_shape``: model.casing)."""
        return (_TOKEN_KEYS + _WORD_KEYS + (("word_end",) if self.pooling == "mean" else ())
                + (("word_shape",) if casing else ()) + ("lengths",))

    def _queue(self, m: int, slots) -> None:
        self.queues[m].extend(slots)
        self.since[list(slots)] = next(self._ticks)

    def next_layer(self) -> int:
        """The layer the rule runs next: (1) the deepest queue past layer 1 holding a full batch,
        (2) else new sentences, (3) else the lowest non-empty queue (the tail sweeps forward).
        With ``oldest_first``, (2) and (3) are instead the queue whose first sentence joined it
        first."""
        q = self.queues
        full = [m for m in range(1, self.M) if len(q[m]) >= self.B]
        if full:
            return full[-1]
        if self.oldest_first:
            return min((m for m in range(self.M) if q[m]), key=lambda m: self.since[q[m][0]])
        if q[0]:
            return 0
        return next(m for m in range(self.M) if q[m])

    def oldest(self) -> int:
        """The tick at which the longest-waiting sentence joined its queue (only when ``busy``)."""
        return min(self.since[q[0]] for q in self.queues if q)

    def step(self) -> None:
        """One layer call: up to ``batch_size`` sentences of the queue ``next_layer`` names."""
        m = self.next_layer()
        take = self.queues[m][:self.B]
        del self.queues[m][:self.B]
        self.run_layer(m, np.asarray(take))

    def run_layer(self, m: int, slots: np.ndarray) -> None:
        """Run layer m on the sentences in ``slots``, then exit (``on_exit``) or requeue each."""
        n = len(slots)
        size = _pad_to(n, self.sizes)
        # Fresh host arrays at every call: the device may read them after this call returns
        # (pool_write runs asynchronously; on CPU a device_put can alias the numpy memory), so a
        # buffer reused across calls raced with it and moved some sentences' state to other slots.
        host = {k: np.zeros((size,) + src.shape[1:], src.dtype) for k, src in self.inputs.items()}
        for k, src in self.inputs.items():  # mode="clip": no bounds-check copy (indices are valid)
            np.take(src, slots, axis=0, out=host[k][:n], mode="clip")
        if m == 0:
            self.stats.embed_calls += 1
        host["slots"] = np.full(size, self.cap, np.int32)  # padding rows: slot C, written nowhere
        host["slots"][:n] = slots
        # e.g. fewer earlier tables than votes needed: no exit, no vote
        vote = m >= min(self.earliest_stop, self.M - 1)
        probs, stop, count = self._call(m, host, vote=vote, head=vote or self.history or self.ensemble)
        self.stats._count(n, size)
        probs = None if probs is None else probs[:n]
        self._exit_or_requeue(m, slots, probs, stop[:n], count[:n])

    def _call(self, m: int, host: dict[str, np.ndarray], *, vote: bool, head: bool = True):
        """Layer m, its exit (``head``) and vote on the padded rows ``host`` (inputs and ``slots``;
        slot C is padding); the pools written in place. Returns numpy ``(probs [B', L, L, K] or
        None without the head, stop [B'], count [B'])``."""
        size = len(host["slots"])
        inputs = jax.device_put(host, self.device)
        ids = inputs.pop("slots")
        hidden, probs, kl_m = pool_layer_step(self.config, self.embeddings, self.model["encoder"]["layers"][m],
                                              self.model["exits"][m], self.pool, ids, inputs, pooling=self.pooling,
                                              start=m == 0, kl=self.kl is not None, head=head)
        if vote:
            stop, count = pool_vote_step(self.policy, self.tables, self.kl, ids, probs, inputs["lengths"], self.knobs,
                                         m=m, num_layers=self.M)
        else:
            stop, count = np.zeros(size, bool), np.zeros(size, np.int32)
        if m < self.M - 1:  # every row's state, exited or not: a freed slot is rewritten before it is read
            # probs only where a table pool reads them: one pool_write program with or without the head
            self.pool, self.tables, self.kl = pool_write(self.pool, self.tables, self.kl, ids, hidden,
                                                         probs if self.tables is not None else None, kl_m,
                                                         np.int32(m))
        return jax.device_get((probs, stop, count))

    def warm_up(self, casing: bool) -> int:
        """Compile every program this batch can call (each padded size, layer 1's start, every
        layer's vote whatever the patience, the pool write) by running them on padding rows.
        ``casing``: whether the rows carry ``word_shape``. Returns the calls made."""
        calls = 0
        for size in self.sizes:
            host = collate([], self.shape, size, casing=casing)
            host = {k: host[k] for k in self._input_keys(casing)}
            host["slots"] = np.full(size, self.cap, np.int32)
            for m in range(self.M):
                self._call(m, dict(host), vote=True)
                calls += 1
            if not (self.history or self.ensemble):  # layers below a budget run without their exit
                for m in range(min(2, self.M - 1)):
                    self._call(m, dict(host), vote=False, head=False)
                    calls += 1
        return calls

    def _exit_or_requeue(self, m: int, slots: np.ndarray, probs: np.ndarray, stop: np.ndarray,
                         count: np.ndarray) -> None:
        """After layer m: the rows that stopped leave (``on_exit``) and free their slots, the others
        wait for layer m + 1."""
        out = probs
        if self.ensemble:  # Sec. 5.5.1: the running sum of tables 1..m, in float32 as vee_infer
            acc = probs if m == 0 else self.acc[slots] + probs
            out = acc / np.float32(m + 1)
        for r in np.flatnonzero(stop):
            slot = slots[r]
            n_words = self.lengths[slot]
            key, self.key[slot] = self.key[slot], None  # cleared first: on_exit may raise
            self.on_exit(key, np.array(out[r, :n_words, :n_words], np.float32), m + 1, int(count[r]))
        self.free.extend(slots[stop].tolist())
        go = ~stop
        if self.ensemble:
            self.acc[slots[go]] = acc[go]
        if go.any():  # never at the last layer, where every sentence stops
            self._queue(m + 1, slots[go].tolist())
