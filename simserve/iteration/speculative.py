"""Speculative decoding in the iteration plan: the drafter's passes, then the target's verify step.

`SpeculativePlanner` wraps a stage's plan builder (a dense stage; see cost.speculative for the
drafters). A batch's speculating decodes arrive as verify chunks of k + 1 tokens over their
cached context (`SpecBatchStats`, built by the scheduler's batch), so the target's plan is the
wrapped planner's own plan of that batch: its GEMMs, attention, all-reduces and logits gather
see k + 1 tokens a sequence. Before it, each draft pass is a compute step with its TP all-reduces
interleaved (a draft model's or EAGLE/MTP layer's), one pass after another (a pass needs the
previous pass's token); the k - 1 passes after the first have one shape and are one step.

Its plans are not timed by the closed-form shortcut of a dense stage (`step_cost` +
`communication` per batch shape, which has no drafter), so `deterministic` is False: each
iteration's plan is priced in `fast` (one timeout) or played, and decode runs are not coalesced.
"""
from __future__ import annotations

from simserve.cost.speculative import Drafter
from simserve.iteration.steps import Collective, Compute, Interleaved, IterationPlan


class SpeculativePlanner:
    deterministic = False

    def __init__(self, inner, drafter: Drafter, algorithm: str):
        self.inner, self.drafter, self.algorithm = inner, drafter, algorithm
        self.gpus = inner.gpus
        self.layers = inner.layers

    def draft_steps(self, stats) -> tuple:
        steps = []
        d = self.drafter
        for seconds, tokens, passes in d.passes(stats):
            if d.allreduces_per_pass:
                ar = Collective("allreduce", (self.gpus,), tokens * d.hidden * d.act_bytes, self.algorithm,
                                d.allreduces_per_pass * passes)
                steps.append(Interleaved(seconds, ar))
            else:
                steps.append(Compute(seconds, "draft"))
        return tuple(steps)

    def plan(self, stats) -> IterationPlan:
        return IterationPlan(self.draft_steps(stats) + self.inner.plan(stats).steps)
