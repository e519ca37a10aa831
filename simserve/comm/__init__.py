"""Collectives on the network: the pure analysis (`compile`: compiled schedules and their idle-network
time; `tuner`: `auto` and `collective_time`) and the SimPy side (`player`, `replay`, the engine's
`Communicator`). The SimPy names load on first use, so the pure analysis imports without SimPy."""
from simserve.comm.compile import compile_schedule, compiled, idle_time
from simserve.comm.tuner import choose_algorithm, collective_time

__all__ = ["FIDELITIES", "Communicator", "choose_algorithm", "collective_time", "compile_schedule",
           "compiled", "idle_time", "play"]


def __getattr__(name):
    if name in ("FIDELITIES", "Communicator"):
        from simserve.comm import communicator
        return getattr(communicator, name)
    if name == "play":
        from simserve.comm.player import play
        return play
    raise AttributeError(f"module 'simserve.comm' has no attribute {name!r}")
