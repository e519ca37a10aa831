"""Shape-aware GEMM time (cost.gemm_table): measured shapes reproduce their table, other shapes
are bounded by their neighbours, and StepCost stays consistent with the per-operator roofline."""
import math

import pandas as pd
import pytest

from simserve.catalog import get_hardware, get_model, profile_dir
from simserve.cost import gemm_table
from simserve.cost.operators import BatchStats, Precision, Shard, head_ops, layer_ops
from simserve.cost.roofline import ops_time
from simserve.cost.step import StepCost

H200 = get_hardware("h200")


def test_measured_shapes_reproduce_the_table():
    table = pd.read_csv(profile_dir("h200") / "gemm.csv")
    for r in table.sample(40, random_state=0).itertuples():   # seeded subset keeps the test fast
        rho = gemm_table.curve(H200, r.dtype, r.k, r.n)
        ideal = gemm_table.roofline_s(r.m, r.k, r.n, r.dtype, H200.flops(r.dtype), H200.hbm_bw_Bps)
        # exact up to float rounding: rho is stored as a log and interpolated at a grid point
        assert rho(r.m) * ideal == pytest.approx(r.time_us * 1e-6, rel=1e-9)


def test_rho_is_at_least_one_and_between_neighbouring_m():
    rho = gemm_table.curve(H200, "bf16", 8192, 1280)
    # a GEMM cannot beat its roofline (rho >= 1: the table's fastest rows reach ~0.8 of peak)
    assert all(rho(m) >= 1.0 for m in (1, 7, 100, 1000, 5000, 8192, 20000))
    lo, hi = sorted((rho(1024), rho(1536)))
    assert lo <= rho(1200) <= hi


def test_unmeasured_shape_blends_its_nearest_measured_shapes():
    # K=8192, N=2000 lies between the measured N=1280 and N=2560 at K=8192
    near = [gemm_table.curve(H200, "bf16", 8192, n)(512) for n in (1280, 2560)]
    blended = gemm_table.curve(H200, "bf16", 8192, 2000)(512)
    assert min(near) * 0.8 <= blended <= max(near) * 1.2   # log-blend of three neighbours


def test_gpus_without_a_profile_keep_the_scalar_roofline():
    assert gemm_table.curve(get_hardware("b200"), "bf16", 4096, 4096) is None


@pytest.mark.parametrize("tokens", [1, 37, 512, 3000])
def test_stepcost_equals_the_operator_sum(tokens):
    model = get_model("llama-3.1-70b")
    shard, precision = Shard(tp=4), Precision()
    batch = BatchStats.of([(tokens, 0)], [2048] * 8)
    step = StepCost(model, shard, precision, H200).time(batch)
    ops = layer_ops(model, shard, precision, batch)
    direct = model.num_layers * ops_time(ops, H200) + ops_time(head_ops(model, shard, precision, batch), H200)
    assert math.isclose(step, direct, rel_tol=1e-9)
