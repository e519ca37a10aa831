"""A replica that speculates: a verify step emits each sequence's accepted drafts plus one token.

The tokens of one step reach the client together (one streamed chunk), so a step records one
inter-token gap per sequence, as vLLM's benchmark measures ITL per chunk; TPOT counts every token.
Decode runs are not coalesced (the stage's plans carry the drafter: iteration.speculative), so
every step is one iteration of `Replica.run` (O(1) events, as without speculation).
"""
from __future__ import annotations

import numpy as np

from simserve.catalog import Gpu, ModelCard, get_model
from simserve.cost.operators import Precision
from simserve.cost.speculative import Drafter, expected_tokens_per_step, with_drafter
from simserve.engine.replica import Replica
from simserve.errors import CapacityError, ConfigError
from simserve.scheduler.batch import Batch
from simserve.scheduler.speculative import Speculation, acceptance_probabilities


class SpeculativeReplica(Replica):
    def _finish(self, batch: Batch, end: float) -> None:
        accepted = batch.accepted
        if accepted is None:
            return super()._finish(batch, end)
        super()._finish(Batch(prefills=batch.prefills), end)
        for req, drafts in zip(batch.decodes, accepted):
            req.prefilled += 1
            self._emit(req, end)
            extra = min(drafts, req.osl - req.generated)
            if extra <= 0:
                continue
            req.prefilled += extra
            req.generated += extra
            self.tokens_emitted += extra
            if req.generated >= req.osl:
                self._complete(req, end)


def build_speculation(cfg, model: ModelCard, gpu: Gpu, precision: Precision, shards: list, plans: list):
    """(drafter per stage, memory plans with the drafter's weights and KV) of a speculating
    config; one-line errors for what is not modelled."""
    spec = cfg.scheduler.speculative
    if len(shards) > 1:
        raise ConfigError("scheduler.speculative needs parallelism.pp 1 (a drafter beside a pipeline is not "
                          "modelled; vLLM V1 speculates without pipeline parallelism)")
    if model.moe is not None:
        raise ConfigError(f"scheduler.speculative on MoE models ({model.name}) is not modelled yet "
                          "(an MoE model's MTP block holds routed experts)")
    draft = get_model(spec.draft_model) if spec.method == "draft" else None
    if draft is not None and draft.vocab != model.vocab:
        raise ConfigError(f"scheduler.speculative.draft_model {draft.name} has a vocabulary of {draft.vocab}, "
                          f"{model.name} one of {model.vocab}: a draft model must share the target's tokenizer")
    tp = shards[0].tp
    drafter = Drafter(spec.method, model, draft, tp, precision, gpu, spec.tokens)
    weights = drafter.weights_bytes(draft, model, precision)
    kv = drafter.kv_bytes_per_token(draft, model, precision)
    plans = [with_drafter(p, weights, kv) for p in plans]
    if plans[0].kv_capacity_tokens < cfg.engine.block_size:
        raise CapacityError(f"{model.name} with its {spec.method} drafter ({weights / 2**30:.1f} GiB of weights) "
                            f"leaves no KV cache on {gpu.name} with tp={tp}")
    return [drafter], plans


def attach_speculation(world, cfg, seed: np.random.SeedSequence) -> None:
    """Per-request acceptance probabilities and each replica's draw stream (from `seed`)."""
    spec = cfg.scheduler.speculative
    accept_seed, *replica_seeds = seed.spawn(1 + len(world.replicas))
    alphas = acceptance_probabilities(spec, len(world.requests), np.random.default_rng(accept_seed))
    world.requests.accept_prob = np.asarray(alphas, dtype=np.float64)   # given to each request when sent
    for rep, rs in zip(world.replicas, replica_seeds):
        rng = np.random.default_rng(rs)
        for sched in rep.schedulers:
            sched.speculation = Speculation(spec.tokens, rng)


def speculation_summary(cfg, replicas) -> dict:
    """The summary's `speculative` key (none when off): drafts accepted per verify step and the
    tokens a step yields, against Leviathan et al.'s expectation at the mean acceptance."""
    spec = cfg.scheduler.speculative
    if spec is None:
        return {}
    specs = [s.speculation for r in replicas for s in r.schedulers]
    verifies = sum(s.verifies for s in specs)
    accepted = sum(s.accepted for s in specs)
    alpha = spec.acceptance if isinstance(spec.acceptance, float) else None
    return {"speculative": {
        "method": spec.method, "tokens": spec.tokens, "verify_steps": verifies,
        "accepted_per_step": accepted / verifies if verifies else 0.0,
        "tokens_per_step": 1 + accepted / verifies if verifies else 0.0,
        "expected_tokens_per_step": None if alpha is None else expected_tokens_per_step(alpha, spec.tokens)}}
