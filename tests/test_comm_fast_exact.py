"""`fast` equals `exact` where collectives of different groups share links (issue 12 part 6): a
replay that other traffic reaches turns back into played flows from where it stands."""
import pytest
import simpy

from simserve.comm import Communicator
from simserve.network import Network, build_topology

MiB, KiB = 2**20, 2**10
# two nodes, two GPUs sharing each NIC (as 4-NIC 8-GPU RoCE nodes): groups (0, 8) and (1, 9)
# each cross the nodes through the same pair of NICs
SHARED_NIC = build_topology("h100-sxm", nodes=2, gpus_per_nic=2)


def _run(fidelity, plan):
    env = simpy.Environment()
    comm = Communicator(env, Network(env, SHARED_NIC), fidelity)
    out = []

    def replica(k, ranks, start_s, nbytes, count, algo):
        yield env.timeout(start_s)
        for rep in range(3):
            out.append((k, rep, env.now, (yield from comm.run("allreduce", ranks, nbytes, algo=algo, count=count))))
            yield env.timeout(3e-6)

    for k, args in enumerate(plan):
        env.process(replica(k, *args))
    env.run()
    return sorted(out), comm, env.now


@pytest.mark.parametrize("algo", ["ring", "tree", "recursive_doubling", "auto"])
@pytest.mark.parametrize("offset_s", [0.0, 7e-6, 41e-6, 130e-6])
def test_fast_equals_exact_when_two_replicas_share_a_nic(algo, offset_s):
    plan = [((0, 8), 0.0, 4 * MiB, 3, algo), ((1, 9), offset_s, 1 * MiB, 2, algo)]
    exact, comm_exact, end_exact = _run("exact", plan)
    fast, comm_fast, end_fast = _run("fast", plan)
    assert [r[:2] + (r[3][0],) for r in fast] == [r[:2] + (r[3][0],) for r in exact]
    assert [r[2] for r in fast] == pytest.approx([r[2] for r in exact], rel=1e-9, abs=1e-15)
    assert [r[3][1] for r in fast] == pytest.approx([r[3][1] for r in exact], rel=1e-9)
    assert end_fast == pytest.approx(end_exact, rel=1e-9)
    assert dict(comm_fast.bytes_by_kind) == pytest.approx(dict(comm_exact.bytes_by_kind), rel=1e-9)
    assert comm_fast.replayed > 0          # it did replay: the equality is not fast playing everything
