"""Which requests run in the next iteration: continuous-batching policies over a paged KV cache.

`POLICIES` (scheduler policies: vllm, orca, sarathi, static; simserve.scheduler.policies) and
`ADMISSIONS` (vllm, guaranteed_no_evict, max_utilization; simserve.scheduler.admission) are
registries: the config's allowed values come from them, and a policy added by another module is
usable from a config by its registered name.
"""
from simserve.scheduler.admission import ADMISSIONS, Admission
from simserve.scheduler.base import POLICIES, Scheduler
from simserve.scheduler.batch import Batch
from simserve.scheduler import policies as _builtin  # noqa: F401  (registers the built-in policies)

__all__ = ["ADMISSIONS", "Admission", "Batch", "POLICIES", "Scheduler"]
