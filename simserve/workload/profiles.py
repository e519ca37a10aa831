"""Dataset length profiles: named ISL/OSL distributions, empirical or fitted.

A profile is data (this module opens no file at import). Two kinds:

- empirical: per-request lengths bundled in `simserve/data/workloads/`; sampling draws whole
  rows with replacement, so each request keeps its own ISL/OSL pairing.
- fitted: only the dataset's average lengths are published (seed 003, Table 2), so ISL and OSL are
  independent lognormals, clipped to [1, max], whose clipped mean equals the published average
  exactly (the location is solved numerically, see `lognormal_mu_for_clipped_mean`). The shape
  (coefficient of variation) and the caps are our assumptions, stated per profile and in
  SOURCES.md: the paper shows the distributions only as a figure.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

# Llama 3.1's context window; a cap for the fitted long-context prompts (paper: Table 1, 128k).
LLAMA31_CONTEXT_TOKENS = 131072


@dataclass(frozen=True)
class FittedLength:
    """A lognormal length in tokens, clipped to [1, max_tokens], with a target clipped mean."""
    mean_tokens: float
    cv: float
    max_tokens: int


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    source: str
    isl_mean_tokens: float            # the published (or file) average the samples must match
    osl_mean_tokens: float
    file: Optional[str] = None        # bundled per-request file (empirical profiles)
    isl_fit: Optional[FittedLength] = None
    osl_fit: Optional[FittedLength] = None

    @property
    def kind(self) -> str:
        return "empirical" if self.file else "fitted"


_SEED003 = "seed 003 (arXiv:2603.05692), Table 2"
# Shapes of the fitted profiles: assumptions, not fitted to per-request data (none is public here).
# Long-document prompts vary moderately around their mean (cv 0.6); generated lengths vary more
# (cv 0.8), as in the bundled traces whose output cv is 0.7-1.4.
_LONG_ISL_CV, _SHORT_ISL_CV, _OSL_CV = 0.6, 0.6, 0.8
_OSL_CAP_TOKENS = 4096


def _fitted(name, description, source, isl_mean, osl_mean, isl_cv=_LONG_ISL_CV) -> Profile:
    return Profile(name, description, source, isl_mean, osl_mean,
                   isl_fit=FittedLength(isl_mean, isl_cv, LLAMA31_CONTEXT_TOKENS),
                   osl_fit=FittedLength(osl_mean, _OSL_CV, _OSL_CAP_TOKENS))


_BBH = "BBH + GSM8K + HumanEval prompts"
PROFILES: dict[str, Profile] = {p.name: p for p in [
    _fitted("longalpaca", "LongAlpaca-12k served by Llama 3.1-70B (long context)", _SEED003, 9092, 208),
    _fitted("mlperf-llama3.1-405b", "MLPerf llama3.1-405b summarization set (8313 prompts) served by "
            "Llama 3.1-405B", _SEED003, 9428, 684),
    _fitted("bbh-gsm8k-humaneval-70b", f"{_BBH} served by Llama 3.1-70B (short prompts)", _SEED003,
            106, 26, _SHORT_ISL_CV),
    _fitted("bbh-gsm8k-humaneval-405b", f"{_BBH} served by Llama 3.1-405B (short prompts)", _SEED003,
            89, 20, _SHORT_ISL_CV),
    Profile("sharegpt", "ShareGPT conversations, Llama-2 tokenizer, <= 8k tokens (Sarathi-Serve)",
            "microsoft/sarathi-serve data/processed_traces (bundled)", 2340.0, 438.7,
            file="sharegpt_8k_filtered_stats_llama2_tokenizer.csv.gz"),
    Profile("arxiv-summarization", "arXiv paper summarization, Llama-2 tokenizer, <= ~4k tokens (Vidur)",
            "microsoft/vidur data/processed_traces (bundled)", 2588.1, 291.4,
            file="arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv.gz"),
    Profile("azure-conv", "lengths of the Azure 2023 conversation trace (Splitwise)",
            "Azure/AzurePublicDataset (bundled)", 1154.7, 211.1, file="AzureLLMInferenceTrace_conv.csv.gz"),
    Profile("azure-code", "lengths of the Azure 2023 code trace (Splitwise)",
            "Azure/AzurePublicDataset (bundled)", 2047.8, 27.9, file="AzureLLMInferenceTrace_code.csv.gz"),
    Profile("mooncake-conversation", "lengths of the Mooncake (Kimi) conversation trace",
            "kvcache-ai/Mooncake FAST25-release (bundled)", 12035.1, 342.6,
            file="conversation_trace.jsonl.gz"),
]}
# The short-prompt mix is named without a model in the issue; it means the 70B row of Table 2.
ALIASES = {"bbh-gsm8k-humaneval": "bbh-gsm8k-humaneval-70b", "longalpaca-70b": "longalpaca",
           "mlperf": "mlperf-llama3.1-405b"}
for _alias, _target in ALIASES.items():
    PROFILES[_alias] = PROFILES[_target]


def _normal_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def clipped_lognormal_mean(mu: float, sigma: float, low: float, high: float) -> float:
    """E[min(max(X, low), high)] for X ~ lognormal(mu, sigma), in closed form."""
    a, b = math.log(low), math.log(high)
    below = _normal_cdf((a - mu) / sigma)
    above = 1.0 - _normal_cdf((b - mu) / sigma)
    inside = math.exp(mu + sigma ** 2 / 2) * (_normal_cdf((b - mu - sigma ** 2) / sigma)
                                              - _normal_cdf((a - mu - sigma ** 2) / sigma))
    return low * below + inside + high * above


def lognormal_mu_for_clipped_mean(fit: FittedLength) -> tuple[float, float]:
    """(mu, sigma) of the lognormal whose mean after clipping to [1, max] is `fit.mean_tokens`.

    sigma comes from the cv of the unclipped lognormal; mu is found by bisection because the
    clipped mean is increasing in mu. Why: a cap (e.g. 4096 output tokens) would otherwise pull
    the sampled mean below the published average the profile promises.
    """
    sigma = math.sqrt(math.log1p(fit.cv ** 2))
    lo, hi = -10.0, math.log(fit.max_tokens) + 10.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if clipped_lognormal_mean(mid, sigma, 1.0, fit.max_tokens) < fit.mean_tokens:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2, sigma


def sample_fitted(fit: FittedLength, n: int, rng: np.random.Generator) -> np.ndarray:
    """n integer lengths from the fitted lognormal (rounded, then clipped to [1, max])."""
    mu, sigma = lognormal_mu_for_clipped_mean(fit)
    x = np.rint(rng.lognormal(mu, sigma, n))
    return np.clip(x, 1, fit.max_tokens).astype(np.int64)


def get_profile(name: str) -> Profile:
    from simserve.errors import WorkloadError
    try:
        return PROFILES[name]
    except KeyError:
        raise WorkloadError(f"unknown length profile {name!r}; known: {', '.join(sorted(PROFILES))}") from None
