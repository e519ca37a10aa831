"""Play one iteration plan alone on a fresh network: the tests' way to compare a plan's closed-form
price with what the executor does with it."""
import simpy

from simserve.comm import Communicator
from simserve.engine.executor import Executor
from simserve.network.flows import Network


def play_alone(topology, plan, fidelity):
    """(duration, the executor's split of it) of `plan` played on an idle `topology`."""
    env = simpy.Environment()
    comm = Communicator(env, Network(env, topology), fidelity)
    proc = env.process(Executor(env, comm, fidelity).play(plan))
    env.run()
    return env.now, proc.value
