"""Collectives played on the network (SimPy): the engine's Communicator and idle-network analysis."""
from simserve.comm.communicator import FIDELITIES, Communicator, choose_algorithm, collective_time
from simserve.comm.player import compile_schedule, compiled, idle_time, play

__all__ = ["FIDELITIES", "Communicator", "choose_algorithm", "collective_time", "compile_schedule",
           "compiled", "idle_time", "play"]
