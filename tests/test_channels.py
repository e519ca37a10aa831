"""Channels by message size (issue 12 part 1): NCCL and RCCL run a small ring or tree call on
fewer channels, dropping one while nBytes < nc x nThreads x threadThreshold (NCCL src/enqueue.cc
topoGetAlgoInfo; RCCL enqueue.cc getChannnelThreadInfo). The expected values below are that loop
worked by hand with NCCL's constants (device.h: 512 LL / 640 LL128 / 512 Simple threads; comm.h
thresholds 8 / 8 / 64 bytes per thread, x nRanks for ring LL) and the catalog's channel counts."""
import pytest

from simserve.comm.tuner import collective_time
from simserve.network.topology import build_topology

KiB, MiB = 2**10, 2**20
H100 = build_topology("h100-sxm")              # 24 channels on one node
MI300X = build_topology("mi300x")              # 64 channels, 256 threads, no thread halving


@pytest.mark.parametrize("proto,family,nranks,nbytes,channels", [
    ("ll", "ring", 8, 256 * KiB, 8),           # 64 B/thread x 512 threads = 32 KiB a channel
    ("ll", "ring", 8, 768 * KiB, 24),
    ("ll", "ring", 4, 256 * KiB, 16),          # 32 B/thread at 4 ranks: 16 KiB a channel
    ("ll", "tree", 8, 64 * KiB, 16),           # tree LL: 8 B/thread, 4 KiB a channel
    ("ll128", "ring", 8, 60 * KiB, 12),        # 8 B/thread x 640 threads = 5 KiB a channel
    ("simple", "ring", 8, 512 * KiB, 16),      # 64 B/thread x 512 = 32 KiB a channel
    ("simple", "ring", 8, 64 * MiB, 24),
])
def test_nccl_channel_count_by_size(proto, family, nranks, nbytes, channels):
    assert H100.comm.channel_fraction(family, proto, nbytes, nranks, 1) == pytest.approx(channels / 24)


def test_nccl_halves_threads_below_one_channel_and_rccl_does_not():
    # 8 KiB ring LL on 8 ranks: one channel, 512 -> 256 -> 128 threads (8 KiB >= 128 x 64 B)
    assert H100.comm.channel_fraction("ring", "ll", 8 * KiB, 8, 1) == pytest.approx(128 / (24 * 512))
    # RCCL: 256 threads, 8 x 8 x 256 = 16 KiB a channel; below it one channel at full threads
    assert MI300X.comm.channel_fraction("ring", "ll", 8 * KiB, 8, 1) == pytest.approx(1 / 64)


def test_fewer_channels_make_a_mid_size_ring_slower_but_never_slower_than_twice_the_size():
    """Time stays monotone in size (the property the issue asks for) while the small ring's
    bandwidth term is set by its few channels."""
    ranks = tuple(range(8))
    t_256k, _ = collective_time(H100, "allreduce", "ring", ranks, 256 * KiB)
    t_512k, _ = collective_time(H100, "allreduce", "ring", ranks, 512 * KiB)
    all_channels = build_topology("h100-sxm", name={**_spec_dict("dgx-h100"), "channels": [0, 0]})
    t_flat, _ = collective_time(all_channels, "allreduce", "ring", ranks, 256 * KiB)
    assert t_flat < t_256k <= t_512k


def _spec_dict(name):
    from simserve.network.topology import get_topology_spec
    spec = get_topology_spec(name)
    return {"name": f"{name}-custom", "description": spec.description, "hardware": spec.hardware,
            "gpus_per_node": spec.gpus_per_node, "fabric": spec.fabric, "nvls": spec.nvls,
            "scale_up": dict(spec.scale_up.__dict__), "scale_out": dict(spec.scale_out.__dict__),
            "launch_latency_us": spec.launch_latency_us, "library": spec.library, "arch": spec.arch,
            "eager_launch_us": spec.eager_launch_us, "nvls_efficiency": spec.nvls_efficiency,
            "nvls_latency_us": spec.nvls_latency_us, "kernels": spec.kernels}
