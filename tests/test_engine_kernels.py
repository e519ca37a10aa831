"""Engine-level all-reduce kernels with their platforms' size limits as data (issue 12, engine
kernels): vLLM's custom all-reduce caps on CUDA (all_reduce_utils.py CUSTOM_ALL_REDUCE_MAX_SIZES)
and on ROCm (custom_all_reduce.py default max_size 8 MiB), vLLM's ROCm QuickReduce (off by
default; _QR_MIN_SIZE thresholds; codec bytes from quick_reduce_impl.cuh). The numbers the tests
compare against are the catalog's sources (catalog/engine_kernels.yaml)."""
import pytest

from simserve.collectives.select import candidates
from simserve.comm.compile import compiled
from simserve.comm.tuner import collective_time
from simserve.network.topology import build_topology
from simserve.simulation import simulate

KiB, MiB = 2**10, 2**20


def _direct(topo, ranks, nbytes):
    found = candidates("allreduce", topo, ranks, nbytes)
    return {"one_shot", "two_shot"} & set(found)


@pytest.mark.parametrize("hardware,gpus,below,at", [
    ("h100-sxm", 8, 256 * KiB - 16, 256 * KiB),        # SM90 table: 8 GPUs 256 KiB
    ("h100-sxm", 4, 32 * MiB - 16, 32 * MiB),          # SM90 table: 4 GPUs 32 MiB
    ("mi300x", 8, 8 * MiB - 16, 8 * MiB),              # ROCm: default max_size 8 MiB
    ("mi300x", 4, 8 * MiB - 16, 8 * MiB),
    ("b200", 8, 1 * MiB - 16, 1 * MiB),                # SM100 table: 8 GPUs 1 MiB
])
def test_custom_allreduce_is_offered_strictly_below_the_platforms_cap(hardware, gpus, below, at):
    topo = build_topology(hardware)
    ranks = tuple(range(gpus))
    assert _direct(topo, ranks, below)
    assert not _direct(topo, ranks, at)      # should_custom_ar: inp_size < max_size


def test_unsupported_world_sizes_get_no_custom_kernel():
    """vLLM's _SUPPORTED_WORLD_SIZES are 2, 4, 6, 8: a TP3 group goes to the library."""
    topo = build_topology("mi300x")
    assert not _direct(topo, (0, 1, 2), 64 * KiB)


def test_tp8_on_mi300x_takes_a_direct_kernel_at_4_MiB_where_cuda_caps_would_not():
    mi300x = build_topology("mi300x")
    _, algo = collective_time(mi300x, "allreduce", "auto", tuple(range(8)), 4 * MiB)
    assert algo in ("one_shot", "two_shot")
    cuda_caps = build_topology("mi300x", kernels="vllm-cuda-sm90")
    _, algo = collective_time(cuda_caps, "allreduce", "auto", tuple(range(8)), 4 * MiB)
    assert algo not in ("one_shot", "two_shot")


def test_quick_reduce_is_off_by_default_and_used_above_its_minimum_when_on():
    ranks = tuple(range(4))
    assert "quick_reduce" not in candidates("allreduce", build_topology("mi300x"), ranks, 64 * MiB)
    topo = build_topology("mi300x", quick_reduce="int4")
    # _QR_MIN_SIZE[(bfloat16, 4)][INT4] = 16 MiB
    assert "quick_reduce" not in candidates("allreduce", topo, ranks, 16 * MiB - 16)
    assert "quick_reduce" in candidates("allreduce", topo, ranks, 16 * MiB)
    _, algo = collective_time(topo, "allreduce", "auto", ranks, 64 * MiB)
    assert algo == "quick_reduce"


def test_quick_reduce_moves_the_codecs_bytes():
    """INT4: 1152 B on the wire per 4096 B of bf16 (quick_reduce_impl.cuh CodecQ4 tile), so the
    two-shot's bytes times 0.28125."""
    ranks, nbytes = tuple(range(4)), 64 * MiB
    qr = compiled(build_topology("mi300x", quick_reduce="int4"), "allreduce", "quick_reduce", ranks, nbytes)
    plain = compiled(build_topology("mi300x"), "allreduce", "two_shot", ranks, nbytes)
    assert qr.payload_bytes == pytest.approx(plain.payload_bytes * 1152 / 4096, rel=1e-12)


def test_quick_reduce_on_nvidia_is_refused_naming_the_field():
    with pytest.raises(Exception, match="collectives.quick_reduce"):
        simulate({"collectives": {"quick_reduce": "int4"}, "workload": {"num_requests": 1}})


@pytest.mark.parametrize("gpus, one_shot_below, workspace", [
    (2, None, 16_000_000),          # world size <= 2: always ONESHOT; workspace 16 * 1000 * 1000
    (4, 1_000_000, 8_000_000),      # <= 4: ONESHOT below 1 * 1000 * 1000 B
    (8, 500_000, 8_000_000),        # more: ONESHOT below 500 * 1000 B
])
def test_trtllm_shot_follows_its_select_implementation_within_the_workspace(gpus, one_shot_below, workspace):
    """TRT-LLM AllreducePlugin::selectImplementation and getMaxRequiredWorkspaceSize
    (customAllReduceUtils.h), as engine_kernels.yaml quotes them: one shot or the other, never
    both, and NCCL alone past the workspace (inclusive: bytes <= workspace)."""
    topo = build_topology("h100-sxm", kernels="trtllm")
    ranks = tuple(range(gpus))
    if one_shot_below:
        assert _direct(topo, ranks, one_shot_below - 2) == {"one_shot"}
        assert _direct(topo, ranks, one_shot_below) == {"two_shot"}
    assert _direct(topo, ranks, workspace) == ({"one_shot"} if gpus == 2 else {"two_shot"})
    assert not _direct(topo, ranks, workspace + 2)


def test_a_config_with_trtllm_kernels_runs_and_uses_them():
    cfg = {"model": "llama-3.1-8b", "cluster": {"topology": "dgx-h100"}, "parallelism": {"tp": 8},
           "collectives": {"kernels": "trtllm", "allreduce": "auto"}, "workload": {"num_requests": 4}}
    result = simulate(cfg)
    assert result.summary["num_completed"] == 4
    used = result.summary["collectives"]["allreduce"]
    assert used.get("one_shot") and used.get("two_shot")    # decode steps one-shot, prefills two-shot
    # decode's TP all-reduce of llama-3.1-8b (hidden 4096, bf16) is 8 KiB a token: one-shot
    topo = build_topology("h100-sxm", kernels="trtllm")
    _, algo = collective_time(topo, "allreduce", "auto", tuple(range(8)), 8 * KiB)
    assert algo == "one_shot"
