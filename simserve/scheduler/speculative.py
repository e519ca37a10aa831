"""Speculative decoding in the scheduler: verify chunks, KV lookahead and the acceptance draws.

With `scheduler.speculative`, every decoding sequence of an iteration is verified as k + 1 query
tokens (its last sampled token and k drafts) and holds KV slots for them (vLLM V1 allocates
`num_lookahead_tokens` = k slots ahead); how many drafts the target accepts is drawn per sequence
and step when the batch is scheduled, from the replica's own seeded stream, with the sequence's
acceptance probability alpha (a constant, or drawn once per request from a distribution: prompts
differ in how predictable their continuations are). The replica emits accepted + 1 tokens at the
step's end (engine.speculative); the KV then holds them, the lookahead slots stay allocated.
"""
from __future__ import annotations

import numpy as np

from simserve.cost.speculative import SpecBatchStats, accepted_drafts


class Speculation:
    def __init__(self, tokens: int, rng: np.random.Generator):
        self.tokens = tokens
        self.rng = rng
        self.verifies = 0           # sequence-steps verified
        self.accepted = 0           # drafts accepted over them

    def lookahead(self, req) -> int:
        """KV slots a decoding sequence needs beyond its next token (never past its last token)."""
        remaining = req.osl - req.generated - 1
        return self.tokens if self.tokens < remaining else max(remaining, 0)

    def draw(self, decodes: list) -> list[int]:
        alphas = np.fromiter((r.accept_prob for r in decodes), dtype=float, count=len(decodes))
        accepted = accepted_drafts(self.rng, alphas, self.tokens)
        self.verifies += len(decodes)
        self.accepted += int(accepted.sum())
        return accepted.tolist()


def acceptance_probabilities(spec, n: int, rng: np.random.Generator) -> np.ndarray:
    """Per-request acceptance probability: the configured constant, or draws from its
    distribution (beta with the given mean and standard deviation, or uniform in [min, max])."""
    acc = spec.acceptance
    if isinstance(acc, (int, float)):
        return np.full(n, float(acc))
    if acc.dist == "uniform":
        return rng.uniform(acc.min, acc.max, size=n)
    common = acc.mean * (1 - acc.mean) / acc.std ** 2 - 1      # beta: a + b from mean and variance
    return rng.beta(acc.mean * common, (1 - acc.mean) * common, size=n)


def spec_stats(batch, tokens: int) -> SpecBatchStats:
    """The batch's statistics with each decode a verify chunk of tokens + 1 over its context."""
    pairs = kv = 0.0
    pf = logits = 0
    for req, chunk in batch.prefills:
        cached = req.prefilled
        pairs += chunk * (cached + (chunk + 1) / 2)
        kv += cached + chunk
        pf += chunk
        if cached + chunk >= req.prefill_target:
            logits += 1
    verify = tokens + 1
    n = len(batch.decodes)
    context = float(sum(req.prefilled for req in batch.decodes))
    return SpecBatchStats(prefill_tokens=pf + n * verify, decode_tokens=0,
                          prefill_attn_pairs=pairs + verify * context + n * verify * (verify + 1) / 2,
                          prefill_kv_tokens=kv + context + n * verify, logits_tokens=logits + n * verify,
                          prompt_tokens=pf, prompt_attn_pairs=pairs, prompt_kv_tokens=kv,
                          draft_seqs=n, draft_kv_tokens=context + n)
