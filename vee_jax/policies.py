"""Exit policies: the vote of VEE-BERT (Sec. 4.2) and the baselines' exit tests (Sec. 5.2).

A policy is one object that knows how it exits: a small frozen (hashable) dataclass, so it can
be a static argument of ``jax.jit``, whose methods are all that the online engine
(``engine.vee_infer``), the batched engine (``batched.batched_infer``), the offline replay
(``offline.replay``), the sweeps (``sweeps``) and the commands ask of it. A new exit rule is one
subclass of ``Policy`` in one file (tests/test_toy_policy.py shows one):

- ``stop(probs_m, history, m, lengths, knobs, history_kl)``: the online decision at layer m, in
  jax (traced); ``vote_step`` adds the forced exit at the last layer.
- ``exit_layers(evidence)``: the same decisions in numpy for every layer at once, from an
  ``Evidence`` (the replay's tables, or a sweep's cached distances and signals), with the votes
  and the near-ties; ``sweep(evidence, grid, subsets, ensemble)``: a grid of configurations.
- ``KNOBS`` / ``knobs()`` / ``split()``: the numbers passed to the engines as traced values, so
  a new threshold never recompiles.
- ``needs_history`` / ``history_kl``: whether the engines carry the earlier tables (and their KL
  self terms); ``earliest_stop()``: the first layer whose test can pass (the batched engine
  skips the votes before it); ``fixed_exit(num_layers, knobs)``: the layer every sentence exits
  at when the tables do not matter, so that the engines compute only that exit.
- ``check(num_layers)``, ``to_dict()``, and ``policy_from_input``: the one way from user input
  (a JSON object, a sweep row, command-line flags, a strategy name) to a policy.

The vote (NOTES item 4): at layer m (1-based) the counter restarts at 0 and counts the earlier
layers i in 1..m-1 with ``D(i, m) <= tau`` (all of them, not only consecutive ones as in PABEE);
exit when ``count >= patience``. So with patience p the earliest exit is layer p+1 and
patience 0 exits at layer 1. Every policy exits at the last layer M. The prediction is layer
m's table, or with ``ensemble`` the mean of the tables of layers 1..m (Sec. 5.5.1; the vote
itself always compares the single layers' tables).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, ClassVar, Iterator, Mapping, Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .errors import PolicyError
from .measures import MEASURES, get_measure, kl_from_self_term, mean_max_prob, normalized_entropy

NEAR_TIE = 1e-5  # |D - tau| (or |signal - tau|) below this may flip between online and offline


class Evidence(Protocol):
    """What a policy's numpy ``exit_layers`` reads, for N sentences of an M-layer model.

    ``offline.Tables`` computes it from every exit's tables (the replay); ``sweeps.SplitSummary``
    holds it cached for a whole split (the sweeps).
    """

    lengths: np.ndarray  # [N] words per sentence

    @property
    def num_layers(self) -> int: ...

    def distance(self, measure: str) -> np.ndarray:
        """``D[i, m, n]`` [M, M, N]: measure(table i, table m) for i < m, NaN elsewhere."""

    def signal(self, name: str) -> np.ndarray:
        """[M, N]: "entropy" (normalised, Eq. 6) or "maxprob" (mean max probability) of every layer."""

    def computed(self, measure: str) -> np.ndarray:
        """[N] bool: the sentences whose ``distance(measure)`` was computed (sweeps only)."""


def _near(x: np.ndarray, tau: float) -> np.ndarray:
    return np.abs(x - np.float32(tau)) < NEAR_TIE


def _first_true(stop: np.ndarray, axis: int) -> np.ndarray:
    """Index of the first True along ``axis`` (the caller guarantees the last is True)."""
    return np.argmax(stop, axis=axis)


def _decided(exit_layer: np.ndarray, num_layers: int) -> np.ndarray:
    """[M, N]: layer m (0-based) took a decision before the exit (the forced last layer excluded)."""
    return np.arange(num_layers)[:, None] < np.minimum(exit_layer, num_layers - 1)


def _replayed(exit_layer, votes=None, near_ties=None) -> dict[str, np.ndarray]:
    exit_layer = np.asarray(exit_layer, np.int64)
    zeros = np.zeros(exit_layer.shape, np.int64)
    return {"exit_layer": exit_layer, "votes": zeros if votes is None else np.asarray(votes, np.int64),
            "near_ties": zeros if near_ties is None else np.asarray(near_ties, np.int64)}


POLICIES: dict[str, type] = {}
"""Policy classes by their strategy name (``--strategy``, ``{"strategy": ...}``, sweep rows)."""


def register(cls: type) -> type:
    """Make ``cls`` known by its ``name`` to ``policy_from_input`` and the sweeps (a class decorator)."""
    POLICIES[cls.name] = cls
    return cls


class Policy:
    """The base of every exit policy; subclasses are frozen dataclasses with an ``ensemble`` field.

    The defaults here fit a policy that needs no earlier table, has no numbers to trace, may stop
    at any layer and cannot know its exit without the tables.
    """

    name: ClassVar[str] = ""
    ensemble: bool
    KNOBS: ClassVar[dict[str, str]] = {}
    """The numbers the engines take as traced values: field name -> dtype ("float32", "int32")."""
    needs_history: ClassVar[bool] = False
    """Whether ``stop`` reads the earlier layers' tables (the engines then carry them)."""
    FLAGS_NEEDED: ClassVar[dict[str, str]] = {}
    """Fields command lines must give (no default makes sense): field -> what to write after ``--``."""

    # --- what the online engines need ----------------------------------------------------------
    @property
    def history_kl(self) -> bool:
        """Whether ``stop`` also reads each earlier table's ``measures.kl_self_term``."""
        return False

    def knobs(self) -> dict[str, float | int]:
        """The policy's numbers (``KNOBS``) as plain values."""
        return {k: getattr(self, k) for k in self.KNOBS}

    def split(self) -> tuple["Policy", dict[str, float | int]]:
        """``(static part, knobs)``: the policy with its numbers set to their defaults, and the numbers.

        The engines compile once per static part (kind, measure, ensemble) and take the knobs as
        traced values.
        """
        defaults = {f.name: f.default for f in dataclasses.fields(self) if f.name in self.KNOBS}
        return dataclasses.replace(self, **defaults), self.knobs()

    def earliest_stop(self) -> int:
        """The first layer (0-based) whose ``stop`` can be True; the batched engine skips the tests before."""
        return 0

    def fixed_exit(self, num_layers: int, knobs: Mapping[str, Any]) -> jax.Array | int | None:
        """The 1-based layer every sentence exits at whatever its tables (a Python int when it does not
        depend on the knobs, else traced), else None.

        Without ``ensemble`` the engines then run the layers up to it and that exit only.
        """
        return None

    def stop(self, probs_m: jax.Array, history: jax.Array | None, m: jax.Array | int, lengths: jax.Array,
             knobs: Mapping[str, Any], history_kl: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """Whether each sentence stops at layer m (0-based), before the forced last layer.

        probs_m: [B, L, L, K] layer m's table; history: [E, B, L, L, K] the earlier tables
        (entries i < m are read; ``needs_history`` only, else None); lengths: [B]; knobs: the
        values of ``KNOBS`` (may be traced); history_kl: [E, B] the history's KL self terms.
        Returns ``(stop [B] bool, count [B] int32)``, count a vote count to report (0 if none).
        """
        raise NotImplementedError

    # --- what the replay and the sweeps need ---------------------------------------------------
    def exit_layers(self, evidence: Evidence) -> dict[str, np.ndarray]:
        """The decisions of ``stop`` in numpy for N sentences: ``exit_layer`` [N] 1-based, ``votes``
        [N] and ``near_ties`` [N], the decisions before the exit within ``NEAR_TIE`` of tau."""
        raise NotImplementedError

    @classmethod
    def sweep(cls, evidence: Evidence, grid: Any, subsets: Sequence[tuple[str, np.ndarray]], ensemble: bool
              ) -> Iterator[tuple[str, np.ndarray, np.ndarray, dict[str, Any]]]:
        """The configurations of ``grid`` (``sweeps.SweepGrid``): ``(subset name, columns [n],
        exit layers [C, n], fields)`` blocks, fields a value or a list of C values per field.

        subsets: ``(name, columns)``, the whole split first. By default: the class's defaults on
        the whole split.
        """
        name, cols = subsets[0]
        yield name, cols, cls().exit_layers(evidence)["exit_layer"][None, cols], {}

    # --- what the commands and the service need ------------------------------------------------
    def check(self, num_layers: int) -> None:
        """Raise PolicyError when the policy cannot run on a model with ``num_layers`` exits."""

    def to_dict(self) -> dict[str, Any]:
        """``{"strategy": "vee", "measure": "kl", "tau": 0.01, "patience": 2, "ensemble": False}``."""
        return {"strategy": self.name, **dataclasses.asdict(self)}


@register
@dataclasses.dataclass(frozen=True)
class VeePolicy(Policy):
    """VEE-BERT: exit at layer m when at least ``patience`` earlier layers i have D(i, m) <= tau."""

    measure: str = "kl"
    tau: float = 0.01
    patience: int = 2
    ensemble: bool = False
    name: ClassVar[str] = "vee"
    KNOBS: ClassVar[dict[str, str]] = {"tau": "float32", "patience": "int32"}
    needs_history: ClassVar[bool] = True

    def __post_init__(self):
        get_measure(self.measure)
        if self.patience < 0:
            raise PolicyError(f"patience must be >= 0, got {self.patience}")

    @property
    def history_kl(self) -> bool:
        return self.measure == "kl"

    def earliest_stop(self) -> int:
        return self.patience  # count <= m earlier layers: no exit before layer patience + 1

    def stop(self, probs_m, history, m, lengths, knobs, history_kl=None):
        count = vote_count(self.measure, history, probs_m, m, lengths, knobs["tau"], history_kl)
        return count >= knobs["patience"], count  # NOTES item 4

    def exit_layers(self, evidence):
        D = evidence.distance(self.measure)
        M = evidence.num_layers
        exit_layer, votes = (x[0, 0] for x in vee_exit_layers(D, self.tau, self.patience))
        decided = np.triu(np.ones((M, M), bool), 1)[..., None] & _decided(exit_layer, M)[None]
        ties = (_near(np.nan_to_num(D, nan=np.inf), self.tau) & decided).sum((0, 1))
        return _replayed(exit_layer, votes, ties)

    @classmethod
    def sweep(cls, evidence, grid, subsets, ensemble):
        """Every measure, patience and tau; on every subset where the measure was computed."""
        M = evidence.num_layers
        pats = np.asarray(grid.patiences if grid.patiences is not None else range(1, M), int)
        pats = pats[(pats >= 1) & (pats <= M - 1)] if M > 1 else np.asarray([1])
        taus = np.asarray(grid.distance_taus)
        for name, cols in subsets:
            for measure in grid.measures:
                if not evidence.computed(measure)[cols].all():
                    continue
                exits, _ = vee_exit_layers(evidence.distance(measure)[..., cols], taus, pats)  # [T, P, n]
                T, P = exits.shape[:2]
                yield name, cols, exits.reshape(T * P, -1), {
                    "measure": measure, "tau": np.repeat(taus, P).tolist(), "patience": np.tile(pats, T).tolist()}


@dataclasses.dataclass(frozen=True)
class _ThresholdPolicy(Policy):
    """Exit at the first layer whose signal (``name``) is below (``below``) or above tau.

    A subclass names itself, its direction and its signal ``(probs [B, L, L, K], lengths [B]) ->
    [B]`` in its class line, and redeclares ``tau`` with its default (the field keeps its place).
    """

    tau: float = 0.0
    ensemble: bool = False
    below: ClassVar[bool] = True
    KNOBS: ClassVar[dict[str, str]] = {"tau": "float32"}

    def __init_subclass__(cls, *, name: str, below: bool, signal: Callable, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.name, cls.below, cls.signal_of = name, below, staticmethod(signal)

    def _signal(self, probs_m, lengths):
        return self.signal_of(probs_m, lengths)

    def stop(self, probs_m, history, m, lengths, knobs, history_kl=None):
        s = self._signal(probs_m, lengths)
        return (s < knobs["tau"]) if self.below else (s > knobs["tau"]), jnp.zeros(probs_m.shape[0], jnp.int32)

    def exit_layers(self, evidence):
        sig = evidence.signal(self.name)
        exit_layer = threshold_exit_layers(sig, self.tau, below=self.below)[0]
        ties = (_near(sig, self.tau) & _decided(exit_layer, evidence.num_layers)).sum(0)
        return _replayed(exit_layer, near_ties=ties)

    @classmethod
    def sweep(cls, evidence, grid, subsets, ensemble):
        """Every tau of ``grid.<name>_taus``, on the whole split."""
        name, cols = subsets[0]
        taus = getattr(grid, f"{cls.name}_taus")
        exits = threshold_exit_layers(evidence.signal(cls.name)[:, cols], np.asarray(taus), below=cls.below)
        yield name, cols, exits, {"tau": list(taus)}


@register
@dataclasses.dataclass(frozen=True)
class EntropyPolicy(_ThresholdPolicy, name="entropy", below=True, signal=normalized_entropy):  # Eq. 6, NOTES 2
    """BranchyNet: exit at the first layer whose normalised entropy (Eq. 6, NOTES 2) is < tau."""

    tau: float = 0.1


@register
@dataclasses.dataclass(frozen=True)
class MaxProbPolicy(_ThresholdPolicy, name="maxprob", below=False, signal=mean_max_prob):
    """Shallow-Deep: exit at the first layer whose mean (over valid cells) max probability is > tau."""

    tau: float = 0.9


@register
@dataclasses.dataclass(frozen=True)
class BudgetPolicy(Policy):
    """Budgeted exiting (Sec. 2.3.2): every sentence exits at layer ``layer`` (1-based)."""

    layer: int = 1
    ensemble: bool = False
    name: ClassVar[str] = "budget"
    KNOBS: ClassVar[dict[str, str]] = {"layer": "int32"}
    FLAGS_NEEDED: ClassVar[dict[str, str]] = {"layer": "layer m (1-based)"}

    def __post_init__(self):
        if self.layer < 1:
            raise PolicyError(f"budget layer is 1-based, got {self.layer}")

    def check(self, num_layers):
        if self.layer > num_layers:
            raise PolicyError(f"budget layer {self.layer} > the model's {num_layers} layers")

    def fixed_exit(self, num_layers, knobs):
        return jnp.clip(knobs["layer"], 1, num_layers)

    def stop(self, probs_m, history, m, lengths, knobs, history_kl=None):
        B = probs_m.shape[0]
        return jnp.broadcast_to(jnp.asarray(m) + 1 >= knobs["layer"], (B,)), jnp.zeros(B, jnp.int32)

    def exit_layers(self, evidence):
        return _replayed(np.full(len(evidence.lengths), self.layer))

    @classmethod
    def sweep(cls, evidence, grid, subsets, ensemble):
        """Every layer, on the whole split."""
        name, cols = subsets[0]
        layers = np.arange(1, evidence.num_layers + 1)
        yield name, cols, np.repeat(layers[:, None], len(cols), 1), {"layer": layers.tolist()}


@register
@dataclasses.dataclass(frozen=True)
class FullPolicy(Policy):
    """No early exit: the whole backbone and the last exit (the BERT-biaffine baseline)."""

    ensemble: bool = False
    name: ClassVar[str] = "full"

    def fixed_exit(self, num_layers, knobs):
        return num_layers  # static: the engine runs the layers as straight-line code

    def stop(self, probs_m, history, m, lengths, knobs, history_kl=None):
        B = probs_m.shape[0]
        return jnp.zeros(B, bool), jnp.zeros(B, jnp.int32)

    def exit_layers(self, evidence):
        return _replayed(np.full(len(evidence.lengths), evidence.num_layers))

    @classmethod
    def sweep(cls, evidence, grid, subsets, ensemble):
        """The full model once, without the ensemble."""
        if not ensemble:
            name, cols = subsets[0]
            yield name, cols, np.full((1, len(cols)), evidence.num_layers), {}


# --- user input -> a policy ------------------------------------------------------------------------
_TYPES = {"float": float, "int": int, "bool": bool, "str": str}


def _strict_value(name: str, value: Any, kind: type) -> Any:
    ok = (isinstance(value, bool) if kind is bool else isinstance(value, str) if kind is str
          else isinstance(value, (int, float)) and not isinstance(value, bool)
          and (kind is float or float(value).is_integer()))
    if not ok or (kind is float and not math.isfinite(value)):
        raise PolicyError(f"policy.{name} must be {'a finite number' if kind is float else kind.__name__}, "
                          f"got {value!r}")
    return kind(value)


def _build(d: Mapping[str, Any], strict: bool) -> Policy:
    """The policy of ``{"strategy": name, field: value, ...}``.

    strict (JSON): unknown fields and values of the wrong type are errors. Lenient (flags, sweep
    rows): keys that are not the policy's fields, and values None or "", are ignored.
    """
    if not isinstance(d, Mapping):
        raise PolicyError(f"a policy is an object like {{\"strategy\": \"vee\", \"tau\": 0.01}}, got {d!r}")
    strategy = d.get("strategy")
    if strategy not in POLICIES:
        raise PolicyError(f"policy.strategy must be one of {sorted(POLICIES)}, got {strategy!r}")
    cls = POLICIES[strategy]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if strict:
        unknown = sorted(set(d) - set(fields) - {"strategy"})
        if unknown:
            raise PolicyError(f"policy {strategy!r} has no field(s) {unknown}; its fields are {sorted(fields)}")
        kwargs = {k: _strict_value(k, v, _TYPES.get(str(fields[k].type), object))
                  if str(fields[k].type) in _TYPES else v for k, v in d.items() if k != "strategy"}
    else:
        kwargs = {k: v for k, v in d.items() if k in fields and v is not None and not (isinstance(v, str) and v == "")}
    try:
        return cls(**kwargs)
    except PolicyError:
        raise
    except (ValueError, TypeError) as e:
        raise PolicyError(f"policy {strategy!r}: {e}") from None


def policy_from_input(obj: Any = None, *, num_layers: int | None = None, strict: bool | None = None) -> Policy:
    """The one way from user input to a policy.

    obj: a policy (returned as it is); None (VEE's defaults: kl, tau 0.01, patience 2); a strategy
    name; a mapping ``{"strategy": name, field: value}`` (from JSON: strict, every key must be a
    field of the right type; ``strict=False`` for sweep rows, which carry other columns and ""
    for fields that do not apply); or a command's parsed flags (absl ``FlagValues``:
    ``--strategy`` (default vee) and the policy's fields, unset ones (None) left at their
    defaults). ``num_layers``: also check that the policy can run on that many layers.
    Raises PolicyError (a ``ConfigError``) with a message that says what to change.
    """
    if obj is None:
        policy: Policy = VeePolicy()
    elif isinstance(obj, Policy):
        policy = obj
    elif isinstance(obj, str):
        policy = _build({"strategy": obj}, strict=True)
    elif isinstance(obj, Mapping):
        policy = _build(obj, strict=True if strict is None else strict)
    elif not hasattr(obj, "flag_values_dict"):
        raise PolicyError(f"a policy is an object like {{\"strategy\": \"vee\", \"tau\": 0.01}}, got {obj!r}")
    else:  # command-line flags
        flags = obj.flag_values_dict()
        strategy = flags.get("strategy") or "vee"
        cls = POLICIES.get(strategy)
        for k, what in (cls.FLAGS_NEEDED if cls else {}).items():
            if flags.get(k) is None:
                raise PolicyError(f"--strategy {strategy} needs --{what}")
        try:
            policy = _build({**flags, "strategy": strategy}, strict=False if strict is None else strict)
            if num_layers is not None:
                check_policy(policy, num_layers)
        except PolicyError as e:
            raise PolicyError(f"--strategy {strategy}: {e}") from None
        return policy
    if num_layers is not None:
        check_policy(policy, num_layers)
    return policy


def check_policy(policy: Policy, num_layers: int) -> None:
    """Raise PolicyError when ``policy`` cannot run on a model with ``num_layers`` exits."""
    if not isinstance(policy, Policy):
        raise TypeError(f"not a policy: {policy!r}")
    policy.check(num_layers)


def split_policy(policy: Policy) -> tuple[Policy, dict[str, float | int]]:
    """``policy.split()``: (static part, knobs)."""
    return policy.split()


def vote_count(
    measure: str, history: jax.Array, probs_m: jax.Array, m: jax.Array | int, lengths: jax.Array, tau: float,
    history_kl: jax.Array | None = None,
) -> jax.Array:
    """VEE's counter at layer m: #{i < m : D(T_i, T_m) <= tau} (Sec. 4.2, NOTES items 1, 4).

    history: [E, B, L, L, K], the tables of layers 0..E-1 (0-based); only entries i < m count
    (E = M in ``vee_infer``; ``batched_infer`` passes just the m earlier ones).
    probs_m: [B, L, L, K], layer m's table; m: 0-based index (may be traced); lengths: [B].
    history_kl: [E, B] the tables' ``measures.kl_self_term`` (KL only), which an engine
    computes once per table; None: computed here.
    Returns [B] int32. KL, Euclidean and cosine compare all E history entries in one fused
    computation and mask i >= m: at most M small tables, cheaper than a loop of dynamic slices
    (bench/latency.py). The edit distance (a dynamic programme, O(L^4)) loops over the m
    earlier tables only, so an early layer does not pay for later ones.
    """
    dist = get_measure(measure)
    if measure != "edit":
        if measure == "kl" and history_kl is not None:  # the self terms cached by the engine
            d = kl_from_self_term(history, history_kl, probs_m[None], lengths[None])  # [E, B]
        else:
            d = dist(history, probs_m[None], lengths[None])  # [E, B]; KL(p_i || p_m), i the earlier layer
        earlier = jnp.arange(history.shape[0])[:, None] < m
        return jnp.sum((d <= tau) & earlier, axis=0).astype(jnp.int32)

    def body(i, count):
        p_i = lax.dynamic_index_in_dim(history, i, 0, keepdims=False)
        return count + (dist(p_i, probs_m, lengths) <= tau).astype(jnp.int32)

    return lax.fori_loop(0, m, body, jnp.zeros(probs_m.shape[0], jnp.int32))


def vote_step(
    policy: Policy,
    history: jax.Array | None,
    probs_m: jax.Array,
    m: jax.Array | int,
    lengths: jax.Array,
    *,
    num_layers: int | None = None,
    knobs: dict[str, jax.Array] | None = None,
    history_kl: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """The exit decision of every sentence at layer m (0-based index; layer m+1 in the paper).

    Args:
      policy: a static policy config.
      history: [M, B, L, L, K] earlier layers' tables (entries i < m are read; policies with
        ``needs_history`` only, may be None for the others).
      probs_m: [B, L, L, K] layer m's table (softmax of exit m).
      m: 0-based layer index, may be traced.
      lengths: [B] real sentence lengths (words).
      num_layers: M; defaults to ``history.shape[0]``.
      knobs: the ``KNOBS`` values (may be traced) that replace the policy's own (``split``);
        None: the policy's fields.
      history_kl: [M, B] the history's ``measures.kl_self_term`` (VEE with KL; None: computed).
    Returns:
      ``(exit [B] bool, count [B] int32)``: exit is True when the sentence stops at this layer
      (always at the last layer); count is VEE's vote count (0 for other policies).
    """
    M = num_layers if num_layers is not None else history.shape[0]
    B = probs_m.shape[0]
    last = jnp.broadcast_to(jnp.asarray(m) >= M - 1, (B,))
    stop, count = policy.stop(probs_m, history, m, lengths, policy.knobs() | (knobs or {}), history_kl)
    return stop | last, count


# --- the same decisions in numpy, for every layer and whole grids at once ------------------------
def vee_exit_layers(D: np.ndarray, taus: Sequence[float] | float, patiences: Sequence[int] | int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """VEE's exit layers for a whole (tau, patience) grid from the distance matrices.

    D: [M, M, N] from ``offline.layer_distances`` (D[i, m] used for i < m only). Returns
    ``(exit_layer [T, P, N] 1-based, votes [T, P, N] the count at the exit)``; scalars for
    ``taus`` / ``patiences`` give T = 1 / P = 1. The vote of NOTES item 4: count at layer m
    = #{i < m : D[i, m] <= tau}, exit when count >= patience, the last layer always exits.
    """
    taus = np.atleast_1d(np.asarray(taus, np.float32))
    pats = np.atleast_1d(np.asarray(patiences))
    M = D.shape[0]
    earlier = np.triu(np.ones((M, M), bool), 1)[..., None]  # i < m
    agree = (D[None] <= taus[:, None, None, None]) & earlier  # [T, M(i), M(m), N]; NaN compares False
    count = agree.sum(1)  # [T, M, N]
    stop = count[:, None] >= pats[None, :, None, None]  # [T, P, M, N]
    stop[:, :, M - 1] = True
    m = _first_true(stop, axis=2)  # [T, P, N]
    votes = np.take_along_axis(np.broadcast_to(count[:, None], stop.shape), m[:, :, None], 2)[:, :, 0]
    return m + 1, votes


def threshold_exit_layers(signal: np.ndarray, taus: Sequence[float] | float, *, below: bool) -> np.ndarray:
    """First layer whose signal is < tau (``below``: entropy) or > tau (max prob), else the last.

    signal: [M, N]. Returns exit layers [T, N], 1-based.
    """
    taus = np.atleast_1d(np.asarray(taus, np.float32))
    s = signal[None]
    stop = s < taus[:, None, None] if below else s > taus[:, None, None]  # [T, M, N]
    stop[:, -1] = True
    return _first_true(stop, axis=1) + 1


__all__ = [
    "BudgetPolicy", "EntropyPolicy", "Evidence", "FullPolicy", "MaxProbPolicy", "MEASURES", "NEAR_TIE", "POLICIES",
    "Policy", "VeePolicy", "check_policy", "policy_from_input", "register", "split_policy",
    "threshold_exit_layers", "vee_exit_layers", "vote_count", "vote_step",
]
