"""The capacity planner (`simserve plan`): which layout, on which GPU, meets an SLO at what
throughput per GPU and cost. spec (what is searched), space (layouts and pruning), search (the
rate search of one layout), runner (probes on local workers or Ray, resumable), report (ranking,
cost, the scaling knee), figures (the Pareto plot), run (all of it into a plan folder)."""
from simserve.plan.run import PlanResult, run_plan
from simserve.plan.spec import PlanSpec, load_plan

__all__ = ["PlanResult", "PlanSpec", "load_plan", "run_plan"]
