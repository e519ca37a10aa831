"""A replica of a mixture-of-experts model: its EP group, attention groups, and the MoE layer on
the network (layout and routing: simserve.cost.moe).

One iteration, layer by layer: the non-expert part of the layer (attention, router, shared
experts) on each attention group's share of the tokens; with tp > 1 the attention output's
all-reduce inside each TP group; the dispatch all-to-all over the EP group (per-pair bytes from
this iteration's routing); the routed experts on every GPU, the layer waiting for the slowest;
the combine all-to-all (the transpose); with tp > 1 an all-gather inside each TP group (each TP
rank dispatched 1/tp of its group's tokens, and the next layer's attention needs them all). Dense
first layers run attention and a TP-sharded FFN with two all-reduces, Megatron-style. No overlap
of compute and communication is modelled.

Time accounting per GPU: its own expert time is compute; the wait for the slowest GPU is counted
as `alltoall` (the GPU sits in the combine all-to-all, as a profiler shows it).

Fidelity: `exact` plays every collective of every layer on the network. `fast` with a group whose
links are its own (no other group's traffic can reach them) evaluates the same sequence without
events: all-to-all times from the pure fluid evaluator on an idle network, once per distinct
routing draw of the iteration (`moe.distinct_layers` draws stand for all MoE layers), TP
collectives from the memoised idle-network times; then the iteration is one timeout. Its result
equals `exact` up to float summation order. All-to-all matrices change every iteration, so they
are compiled and costed without the topology's memo (which would grow without bound). `fast` on
shared links plays each collective unless its links are idle (Communicator's rule). MoE
iterations are stepped one by one (no coalesced decode runs).
"""
from __future__ import annotations

import math

import numpy as np

from simserve.catalog import DTYPE_BYTES, Gpu, ModelCard
from simserve.collectives import algorithms
from simserve.comm import Communicator, collective_time
from simserve.comm.player import compile_schedule, compiled, facts, play
from simserve.cost.moe import (ExpertCost, ExpertRouter, MoeLayout, dense_layer_op_models, dedup_ratio, dispatch_matrix,
                               head_models, moe_layer_op_models)
from simserve.cost.operators import BatchStats, Precision
from simserve.cost.step import StepCost
from simserve.network.fluid import idle_phase_s


def _scaled(stats: BatchStats, factor: float) -> BatchStats:
    if factor == 1.0:
        return stats
    return BatchStats(stats.prefill_tokens * factor, stats.decode_tokens * factor, stats.prefill_attn_pairs * factor,
                      stats.prefill_kv_tokens * factor, stats.decode_kv_tokens * factor, stats.logits_tokens * factor)


class MoeStage:
    """Same interface as engine.stage.Stage for the replica loop (never closed form)."""

    closed_form = False

    def __init__(self, env, comm: Communicator, gpus: tuple[int, ...], model: ModelCard, precision: Precision,
                 gpu: Gpu, layout: MoeLayout, router: ExpertRouter, share: np.ndarray, *, allreduce: str,
                 alltoall: str, fidelity: str, exclusive_links: bool):
        self.env, self.comm, self.gpus = env, comm, tuple(gpus)
        self.model, self.layout, self.router, self.share = model, layout, router, share
        self.layers = model.num_layers
        self.moe_layers = model.num_layers - model.moe.first_dense_layers
        self.dense_layers = model.moe.first_dense_layers
        self.allreduce_algo, self.alltoall_algo = allreduce, alltoall
        self.fidelity = fidelity
        self.pure = fidelity == "fast" and exclusive_links
        tp = layout.tp
        self.groups = [self.gpus[g * tp:(g + 1) * tp] for g in range(layout.dp_attention)]
        self.moe_cost = StepCost.of_ops([(m, 1.0) for m in moe_layer_op_models(model, tp, precision)], gpu)
        self.dense_cost = StepCost.of_ops([(m, 1.0) for m in dense_layer_op_models(model, tp, precision)], gpu)
        self.head_cost = StepCost.of_ops([(m, 1.0) for m in head_models(model, tp, precision)], gpu)
        self.expert_cost = ExpertCost.of(model, layout, precision, gpu)
        self.dedup = dedup_ratio(router.expected_popularity(), share, router.top_k)   # (S, ranks)
        act = DTYPE_BYTES[precision.activations]
        self.token_bytes = model.hidden * act
        self.logit_bytes_per_token = (-(-model.vocab // tp)) * tp * act
        self.capacity = [link.bw_Bps for link in comm.topology.links]
        self.calls: dict[tuple[str, str], float] = {}
        self.busy = {"compute": 0.0, "allreduce": 0.0, "allgather": 0.0, "alltoall": 0.0}   # per GPU
        self.imbalance: list[np.ndarray] = []       # max / mean token-expert pairs per GPU, per draw
        self.slowest_over_mean: list[np.ndarray] = []
        self.straggler_s = 0.0
        self.alltoall_bytes = 0.0                   # dispatch + combine payload, all layers

    # -- collectives ---------------------------------------------------------------------------
    def _a2a_program(self, matrix):
        topo = self.comm.topology
        algos = ("direct", "pairwise") if self.alltoall_algo == "auto" else (self.alltoall_algo,)
        best = None
        for algo in algos:
            program = compile_schedule(topo, algorithms.build("alltoall", algo, self.gpus, None, facts(topo),
                                                              matrix=matrix))
            t = self._idle_s(program)
            if best is None or t < best[1]:
                best = (program, t)
        return best

    def _idle_s(self, program) -> float:
        return program.launch_s + sum(idle_phase_s(ph.items, self.capacity) + ph.extra_s for ph in program.phases)

    def _tp_ops(self, group_tokens: float, logits: float):
        """(op, algorithm, bytes, per-layer times for MoE layers, dense layers, head) of one TP group."""
        tok = group_tokens * self.token_bytes
        ops = []
        if self.layout.tp > 1:
            if self.layout.ep > 1:
                ops += [("allreduce", self.allreduce_algo, tok, 1, 2, 1), ("allgather", "auto", tok, 1, 0, 0)]
            else:
                ops += [("allreduce", self.allreduce_algo, tok, 2, 2, 1)]
            ops += [("allgather", "auto", logits * self.logit_bytes_per_token, 0, 0, 1)]
        return [op for op in ops if op[2] > 0]

    def _count(self, op: str, algo: str, times: float) -> None:
        self.calls[(op, algo)] = self.calls.get((op, algo), 0) + times

    # -- one iteration -------------------------------------------------------------------------
    def execute(self, stats: BatchStats):
        """SimPy process body; returns the per-GPU (compute, all-reduce, all-gather, all-to-all) seconds."""
        env, lay = self.env, self.layout
        tokens = stats.tokens
        group = _scaled(stats, 1.0 / lay.dp_attention)
        moe_dense_s = self.moe_cost.time(group)
        dense_s = self.dense_cost.time(group) if self.dense_layers else 0.0
        head_s = self.head_cost.time(group)
        pairs = self.router.draw(tokens)                          # (S, E)
        served = pairs[:, :, None] * self.share                   # (S, E, ranks)
        loads = served.sum(axis=1)                                # (S, ranks)
        expert_s = self.expert_cost.per_rank_s(served)            # (S, ranks)
        slowest, mean = expert_s.max(axis=1), expert_s.mean(axis=1)
        means = loads.mean(axis=1)
        self.imbalance.append(np.where(means > 0, loads.max(axis=1) / np.where(means > 0, means, 1.0), 1.0))
        self.slowest_over_mean.append(np.where(mean > 0, slowest / np.where(mean > 0, mean, 1.0), 1.0))
        draws = pairs.shape[0]
        uses = np.bincount(np.arange(self.moe_layers) % draws, minlength=draws)   # layers per draw
        programs = []
        if lay.ep > 1:
            received = loads * self.dedup
            for s in range(draws):
                m = dispatch_matrix(received[s], tokens, self.token_bytes)
                programs.append((self._a2a_program(m), self._a2a_program([list(r) for r in zip(*m)])))
                self.alltoall_bytes += 2 * sum(map(sum, m)) * uses[s]
        group_tokens = math.ceil(tokens / lay.dp_attention)
        logits = math.ceil(stats.logits_tokens / lay.dp_attention)
        tp_ops = self._tp_ops(group_tokens, logits)
        compute_s = (self.dense_layers * dense_s + self.moe_layers * moe_dense_s + head_s
                     + float(np.dot(uses, mean)))
        straggler = float(np.dot(uses, slowest - mean))
        self.straggler_s += straggler
        if self.pure:
            ar = ag = a2a = 0.0
            for op, algo, nbytes, per_moe, per_dense, per_head in tp_ops:
                times = per_moe * self.moe_layers + per_dense * self.dense_layers + per_head
                t, used = collective_time(self.comm.topology, op, algo, self.groups[0], nbytes)
                program = compiled(self.comm.topology, op, used, self.groups[0], nbytes)
                program.account(self.comm.network, times * len(self.groups))
                self._count(op, program.algorithm, times * len(self.groups))
                if op == "allreduce":
                    ar += t * times
                else:
                    ag += t * times
            for s, pair in enumerate(programs):
                for program, t in pair:
                    a2a += t * int(uses[s])
                    program.account(self.comm.network, int(uses[s]))
                    self._count("alltoall", program.algorithm, int(uses[s]))
            duration = compute_s + straggler + ar + ag + a2a
            yield env.timeout(duration)
            return self._book(compute_s, ar, ag, a2a + straggler)
        start = env.now
        spent = {"allreduce": 0.0, "allgather": 0.0, "alltoall": 0.0}

        def tp_collectives(which: int):
            for op, algo, nbytes, *per in tp_ops:
                for _ in range(per[which]):
                    t0 = env.now
                    yield env.all_of([env.process(self.comm.run(op, g, nbytes, algo=algo)) for g in self.groups])
                    spent[op] += env.now - t0

        def a2a(program):
            t0 = env.now
            if self.fidelity == "fast" and not self.comm.network.busy(program.links):
                duration = self._idle_s(program)
                program.account(self.comm.network)
                self.comm.network.reserve(program.links, env.now + duration)
                yield env.timeout(duration)
            else:
                yield from play(env, self.comm.network, program)
            self._count("alltoall", program.algorithm, 1)
            spent["alltoall"] += env.now - t0

        for _ in range(self.dense_layers):
            yield env.timeout(dense_s)
            yield from tp_collectives(1)
        for layer in range(self.moe_layers):
            s = layer % draws
            yield env.timeout(moe_dense_s)
            if lay.tp > 1:   # the attention all-reduce (first op of the MoE layer's TP list)
                yield from tp_collectives_first(self, tp_ops, env, spent)
            if programs:
                yield from a2a(programs[s][0][0])
            yield env.timeout(float(slowest[s]))
            if programs:
                yield from a2a(programs[s][1][0])
            if lay.tp > 1:
                yield from tp_collectives_rest(self, tp_ops, env, spent)
        yield env.timeout(head_s)
        yield from tp_collectives(2)
        compute_played = env.now - start - sum(spent.values())
        # compute_played = compute_s + straggler up to summation order; the split follows the model
        return self._book(compute_played - straggler, spent["allreduce"], spent["allgather"],
                          spent["alltoall"] + straggler)

    def _book(self, compute: float, ar: float, ag: float, a2a: float):
        busy = self.busy
        busy["compute"] += compute
        busy["allreduce"] += ar
        busy["allgather"] += ag
        busy["alltoall"] += a2a
        return compute, ar, ag, a2a

    def busy_s(self) -> dict[str, float]:
        return dict(self.busy)

    def report(self) -> dict:
        """The expert load imbalance: max / mean token-expert pairs per GPU per layer (one sample per
        distinct routing draw of every iteration), and the slowest GPU's expert time over the mean."""
        from simserve.metrics import distribution
        imb = np.concatenate(self.imbalance) if self.imbalance else np.zeros(0)
        slow = np.concatenate(self.slowest_over_mean) if self.slowest_over_mean else np.zeros(0)
        return {"imbalance": distribution(imb), "slowest_over_mean_expert_time": distribution(slow),
                "straggler_wait_s": self.straggler_s, "alltoall_payload_bytes": self.alltoall_bytes}


def tp_collectives_first(stage: MoeStage, tp_ops, env, spent):
    """The attention output's all-reduce of an MoE layer (one per TP group, concurrently)."""
    op, algo, nbytes = tp_ops[0][:3]
    t0 = env.now
    yield env.all_of([env.process(stage.comm.run(op, g, nbytes, algo=algo)) for g in stage.groups])
    spent[op] += env.now - t0


def tp_collectives_rest(stage: MoeStage, tp_ops, env, spent):
    """After the combine: the all-gather (ep > 1) or the MoE output's all-reduce (ep = 1)."""
    op, algo, nbytes, per_moe = tp_ops[0][:4]
    todo = []
    if per_moe > 1:
        todo.append((op, algo, nbytes))
    todo += [(o, a, b) for o, a, b, pm, _, _ in tp_ops[1:] if pm]
    for op, algo, nbytes in todo:
        t0 = env.now
        yield env.all_of([env.process(stage.comm.run(op, g, nbytes, algo=algo)) for g in stage.groups])
        spent[op] += env.now - t0
