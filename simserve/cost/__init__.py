"""Pure cost models: the transformer as operators with FLOPs and bytes, roofline times, memory.

No SimPy here, and no I/O beyond reading a profiled GPU's measured tables once (gemm_table,
op_tables): the engine asks these functions how long an iteration's compute takes
and how much memory a shard needs, and everything is unit-tested on its own.
"""
from simserve.cost.operators import BatchStats, Op, Precision, Shard, layer_ops, head_ops
from simserve.cost.roofline import op_time, ops_time
from simserve.cost.step import StepCost
from simserve.cost.memory import MemoryPlan, memory_plan

__all__ = ["BatchStats", "Op", "Precision", "Shard", "layer_ops", "head_ops", "op_time", "ops_time",
           "StepCost", "MemoryPlan", "memory_plan"]
