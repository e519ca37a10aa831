"""Layout rules: whether a parallel layout can serve a model (one function per rule, each with its
message). Checked before anything is built, so a bad layout is one line and exit code 2."""
from __future__ import annotations

from simserve.catalog import ModelCard
from simserve.config import SimConfig
from simserve.engine.swap import swap_settings
from simserve.errors import ConfigError


def _cp_supported(cfg: SimConfig, model: ModelCard) -> None:
    if cfg.parallelism.cp != 1 and model.moe is not None:
        raise ConfigError(f"parallelism.cp={cfg.parallelism.cp}: context parallelism of mixture-of-experts "
                          f"models is not modelled yet ({model.name})")


def _tp_comm_dense(cfg: SimConfig, model: ModelCard) -> None:
    if cfg.engine.overlap == "tp_comm" and model.moe is not None:
        raise ConfigError(f"engine.overlap=tp_comm: two-batch overlap of MoE stages (all-to-all under "
                          f"compute) is not modelled yet ({model.name})")


def _ep_needs_moe(cfg: SimConfig, model: ModelCard) -> None:
    if model.moe is None and cfg.parallelism.ep != 1:
        raise ConfigError(f"parallelism.ep={cfg.parallelism.ep} needs a mixture-of-experts model; "
                          f"{model.name} is dense")


def _tp_divides_heads(cfg: SimConfig, model: ModelCard) -> None:
    tp = cfg.parallelism.tp
    if model.num_heads % tp:
        raise ConfigError(f"tp={tp} does not divide {model.name}'s {model.num_heads} attention heads")
    if model.mla is None and tp > model.num_kv_heads and tp % model.num_kv_heads:
        raise ConfigError(f"tp={tp} is not a multiple of {model.name}'s {model.num_kv_heads} KV heads")


def _tp_divides_ffn(cfg: SimConfig, model: ModelCard) -> None:
    if model.intermediate % cfg.parallelism.tp:
        raise ConfigError(f"tp={cfg.parallelism.tp} does not divide {model.name}'s FFN width {model.intermediate}")


def _moe_stage_split(cfg: SimConfig, model: ModelCard) -> None:
    if model.moe is not None and cfg.parallelism.pp > 1 and cfg.parallelism.stage_layers == "balanced":
        raise ConfigError("parallelism.stage_layers=balanced weighs dense layers; give MoE pipelines "
                          "`even` or a list of layers per stage")


def _ep_multiple_of_tp(cfg: SimConfig, model: ModelCard) -> None:
    """The EP group spans tp x dp_attention GPUs."""
    par = cfg.parallelism
    if model.moe is not None and par.ep > 1 and par.ep % par.tp:
        raise ConfigError(f"ep={par.ep} must be a multiple of tp={par.tp}: the EP group spans tp x "
                          f"dp_attention GPUs")


def _ep_divides_experts(cfg: SimConfig, model: ModelCard) -> None:
    par, moe = cfg.parallelism, model.moe
    if moe is None:
        return
    redundant = cfg.moe.redundant_experts
    if (moe.num_experts + redundant) % par.ep:
        extra = f" + {redundant} redundant" if redundant else ""
        raise ConfigError(f"ep={par.ep} does not divide {model.name}'s {moe.num_experts}{extra} experts")
    if redundant > moe.num_experts * (par.ep - 1):
        raise ConfigError(f"moe.redundant_experts={redundant}: at most one copy of an expert per "
                          f"GPU ({moe.num_experts * (par.ep - 1)} extra copies with ep={par.ep})")


def _tp_divides_experts(cfg: SimConfig, model: ModelCard) -> None:
    par, moe = cfg.parallelism, model.moe
    if moe is None:
        return
    if par.ep == 1 and moe.expert_intermediate % par.tp:
        raise ConfigError(f"tp={par.tp} does not divide {model.name}'s expert width {moe.expert_intermediate}")
    if moe.shared_experts and (moe.shared_experts * moe.expert_intermediate) % par.tp:
        raise ConfigError(f"tp={par.tp} does not divide {model.name}'s shared-expert width")


def swap_preemption(cfg: SimConfig, model: ModelCard) -> None:
    """Swap preemption is modelled for one-stage dense replicas without the techniques that share or
    move KV blocks otherwise; anything else is one line."""
    if swap_settings(cfg)[0] != "swap":
        return
    par, sc = cfg.parallelism, cfg.scheduler
    for what, on in (("parallelism.pp > 1", par.pp > 1), ("parallelism.cp > 1", par.cp > 1),
                     ("scheduler.prefix_caching", sc.prefix_caching),
                     ("disaggregation", cfg.disaggregation is not None),
                     ("scheduler.speculative", sc.speculative), ("scheduler.policy static", sc.policy == "static"),
                     (f"a mixture-of-experts model ({model.name})", model.moe is not None)):
        if on:
            raise ConfigError(f"scheduler.preemption=swap with {what} is not modelled yet "
                              f"(use scheduler.preemption: recompute)")


RULES = (_cp_supported, _tp_comm_dense, _ep_needs_moe, _tp_divides_heads, _tp_divides_ffn, _moe_stage_split,
         _ep_multiple_of_tp, _ep_divides_experts, _tp_divides_experts, swap_preemption)


def check_layout(cfg: SimConfig, model: ModelCard) -> None:
    """Raise ConfigError for the first rule the layout breaks."""
    for rule in RULES:
        rule(cfg, model)
