"""Joint training of all exits (Sec. 2.3.1): the train state, the optimiser, train_step, eval_step.

The train state is a plain dict pytree::

    {"params": {"encoder": <bert pytree>, "exits": <exit pytree>},
     "opt_state": <optax state>, "step": int32 [], "rng": key data uint32 [2]}
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax

from .bert import BertConfig, encode_layers
from .exits import all_exit_logits, biaffine, exit_inputs, init_exits, select_exit
from .loss import exit_losses

State = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Everything static about the model (hashable: a static argument of the jitted steps).

    num_labels: K, entity types + 1 (class 0 = no entity). exits: "all" trains every exit
    with the weighted loss of Eq. 5; "last" trains only the last exit (the plain BERT-biaffine
    baseline). pooling: "first" or "mean" subword -> word. ffnn_size: Yu et al.'s projections.
    casing: each exit adds a learned embedding of the words' shape ids (``model.casing``, a
    deviation from the paper for uncased backbones; batches then carry ``word_shape``).
    """

    bert: BertConfig
    num_labels: int
    pooling: str = "first"
    ffnn_size: int | None = None
    exits: str = "all"
    casing: bool = False

    @property
    def num_exits(self) -> int:
        return self.bert.num_layers

    def exit_weights(self) -> jax.Array:
        """Loss weights of the computed exits: [M] with m for exit m (Eq. 5), or [1] for "last"."""
        if self.exits == "all":
            return jnp.arange(1, self.num_exits + 1, dtype=jnp.float32)
        if self.exits == "last":
            return jnp.ones(1)  # forward_logits computes only the last exit
        raise ValueError(f"model.exits must be 'all' or 'last', got {self.exits!r}")


def make_optimizer(
    total_steps: int,
    *,
    lr: float = 5e-5,
    exit_lr: float = 1e-3,
    weight_decay: float = 0.01,
    warmup_fraction: float = 0.1,
    clip_norm: float = 1.0,
) -> optax.GradientTransformation:
    """AdamW with linear warmup and linear decay; the exits get their own higher rate (footnote 5).

    Gradients are clipped by global norm first; no weight decay on biases and LayerNorm. Everything
    under ``params["exits"]`` (with ``model.casing``, the exits' shape embeddings too) trains at
    ``exit_lr``.
    """
    warmup = max(1, int(total_steps * warmup_fraction))

    def schedule(peak):
        return optax.join_schedules(
            [optax.linear_schedule(0.0, peak, warmup), optax.linear_schedule(peak, 0.0, max(1, total_steps - warmup))],
            [warmup],
        )

    def decay_mask(params):
        # Decay matrices only: kernels, embeddings, U and W (ndim >= 3 once stacked, or embeddings).
        def is_matrix(path, x):
            name = jax.tree_util.keystr(path)
            return not ("bias" in name or "scale" in name or "['b']" in name)

        return jax.tree_util.tree_map_with_path(is_matrix, params)

    def adamw(peak):
        return optax.adamw(schedule(peak), b1=0.9, b2=0.999, eps=1e-8, weight_decay=weight_decay, mask=decay_mask)

    return optax.chain(
        optax.clip_by_global_norm(clip_norm),
        optax.multi_transform({"encoder": adamw(lr), "exits": adamw(exit_lr)},
                              {"encoder": "encoder", "exits": "exits"}),
    )


def build_spec(config: Any, bert_config: BertConfig, num_labels: int) -> ModelSpec:
    """The model of a config (``config.model``) on a backbone: what a checkpoint of it holds."""
    return ModelSpec(bert=bert_config, num_labels=num_labels, pooling=config.model.pooling,
                     ffnn_size=config.model.ffnn_size or None, exits=config.model.exits,
                     casing=bool(config.model.get("casing", False)))  # absent in configs saved before it


def build_optimizer(config: Any, total_steps: int) -> optax.GradientTransformation:
    """The optimizer of a config (``config.optim``); a checkpoint's state holds its moments."""
    o = config.optim
    return make_optimizer(total_steps, lr=o.lr, exit_lr=o.exit_lr, weight_decay=o.weight_decay,
                          warmup_fraction=o.warmup_fraction, clip_norm=o.clip_norm)


def init_state(spec: ModelSpec, encoder_params: Any, optimizer: optax.GradientTransformation, seed: int = 0) -> State:
    """A fresh train state: pretrained encoder, random exits, optimiser state, step 0."""
    key = jax.random.PRNGKey(seed)
    k_exit, k_drop = jax.random.split(key)
    params = {
        # A copy: train_step donates the state, which must not delete the caller's arrays.
        "encoder": jax.tree.map(jnp.copy, encoder_params),
        "exits": init_exits(k_exit, spec.bert, spec.num_labels, ffnn_size=spec.ffnn_size, casing=spec.casing),
    }
    return {"params": params, "opt_state": optimizer.init(params), "step": jnp.int32(0), "rng": k_drop}


def forward_logits(spec: ModelSpec, params: Any, batch: dict, rng: jax.Array | None = None) -> jax.Array:
    """[M, B, L, L, K] logits of every exit (only the last one, as [1, ...], when exits='last')."""
    if spec.exits == "last":
        hidden = encode_layers(spec.bert, params["encoder"], batch["input_ids"], batch["attention_mask"],
                               batch.get("token_type_ids"), rng=rng)[-1]
        return biaffine(select_exit(params["exits"], spec.num_exits - 1), *exit_inputs(hidden, batch, spec.pooling))[None]
    return all_exit_logits(spec.bert, params["encoder"], params["exits"], batch, pooling=spec.pooling, rng=rng)


def _train_step(state: State, batch: dict, *, spec: ModelSpec, optimizer: optax.GradientTransformation):
    rng = jax.random.fold_in(state["rng"], state["step"])

    def loss_fn(params):
        logits = forward_logits(spec, params, batch, rng)
        return exit_losses(logits, batch["gold"], batch["lengths"], spec.exit_weights())

    (loss, per_exit), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
    updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    metrics = {"loss": loss, "per_exit": per_exit, "grad_norm": optax.global_norm(grads)}
    new_state = {"params": params, "opt_state": opt_state, "step": state["step"] + 1, "rng": state["rng"]}
    return new_state, metrics


train_step = jax.jit(_train_step, static_argnames=("spec", "optimizer"), donate_argnums=(0,))
train_step.__doc__ = """One update on a batch: ``train_step(state, batch, spec=..., optimizer=...) -> (state, metrics)``.

``batch`` as made by ``vee_jax.data.collate`` (``input_ids`` [B, T], ``word_index`` [B, L],
``gold`` [B, L, L], ``lengths`` [B], ...). ``metrics``: ``loss`` (Eq. 5), ``per_exit`` [M]
(Eq. 4, per valid cell), ``grad_norm``. Dropout keys derive from ``state["rng"]`` and the step,
so a resumed run repeats an uninterrupted one. The input state is donated.
"""


def _eval_step(state: State, batch: dict, *, spec: ModelSpec) -> jax.Array:
    logits = all_exit_logits(spec.bert, state["params"]["encoder"], state["params"]["exits"], batch,
                             pooling=spec.pooling)
    return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)


eval_step = jax.jit(_eval_step, static_argnames=("spec",))
eval_step.__doc__ = """Every exit's probability tables: ``eval_step(state, batch, spec=...) -> [M, B, L, L, K]``.

Deterministic (no dropout). ``state`` needs only ``state["params"]``.
"""
