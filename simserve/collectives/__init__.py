"""Collective algorithms as data (pure): schedules, their symbolic check, closed-form cost, auto choice."""
from simserve.collectives.algorithms import ALGORITHMS, TopologyFacts, build
from simserve.collectives.check import ScheduleError, verify
from simserve.collectives.schedule import OPS, Phase, Schedule, SwitchReduce, Transfer

__all__ = ["ALGORITHMS", "OPS", "Phase", "Schedule", "ScheduleError", "SwitchReduce", "TopologyFacts",
           "Transfer", "build", "verify"]
