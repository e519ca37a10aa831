"""The SimPy environment simserve runs in: counts events and schedules at absolute times."""
from __future__ import annotations

from heapq import heappush

import simpy
from simpy.core import NORMAL


class SimEnvironment(simpy.Environment):
    """simpy.Environment plus an event count and `at(time_s)`.

    `at` schedules at an absolute time instead of now + delay: the engine computes a run of
    iteration end times as a cumulative sum and must land exactly on them, which now + (t - now)
    does not guarantee in floating point. It pushes onto SimPy's event queue the same tuple
    (time, priority, event id, event) that Environment.schedule does.
    """

    def __init__(self, initial_time: float = 0.0):
        super().__init__(initial_time)
        self.events_scheduled = 0

    def schedule(self, event, priority=NORMAL, delay=0):
        self.events_scheduled += 1
        super().schedule(event, priority, delay)

    def at(self, time_s: float, value=None) -> simpy.Event:
        if time_s < self._now:
            raise ValueError(f"cannot schedule at {time_s} before now ({self._now})")
        event = simpy.Event(self)
        event._ok = True
        event._value = value
        self.events_scheduled += 1
        heappush(self._queue, (time_s, NORMAL, next(self._eid), event))
        return event
