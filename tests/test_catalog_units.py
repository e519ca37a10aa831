"""Every hardware catalog entry against its datasheet, in one unit system (bytes, bytes/s, FLOP/s).

DATASHEET is the reference table of the project's collected sources, /work/shared/reference/comm.md
section 3 ("Hardware catalog (dense peaks; sparse values x2)"), copied here so the test does not
read outside the package: HBM capacity as the vendor quotes it (GB of HBM, which vendors count in
binary units: an "80 GB" H100 reports 81,559 MiB, a "141 GB" H200 143,771 MiB), HBM bandwidth in
TB/s (decimal), dense BF16 and FP8 TFLOP/s, scale-up links and the per-GPU scale-up bandwidth per
direction in GB/s (comm.md quotes bidirectional: 900 for NVLink4 = 450 per direction).
"""
import pytest

from simserve.catalog import hardware_catalog

GiB = 2**30
DATASHEET = {
    # name: (HBM GB, HBM TB/s, BF16 TF, FP8 TF or None, links, scale-up GB/s per direction)
    "a100-80gb": (80, 2.039, 312, None, 12, 300),
    "h100-sxm": (80, 3.35, 989, 1979, 18, 450),
    "h200": (141, 4.8, 989, 1979, 18, 450),
    "h800": (80, 3.35, 989, 1979, 8, 200),          # NVLink cut to 400 GB/s bidirectional
    "h20": (96, 4.0, 148, 296, 18, 450),            # export-limited compute, full NVLink 4
    "b200": (180, 8.0, 2250, 4500, 18, 900),       # 180 GB usable of 192 (DGX B200: 1,440 GB / 8)
    "mi300x": (192, 5.3, 1307, 2615, 7, 448),      # 7 x 64 GB/s raw xGMI per direction
    "mi325x": (256, 6.0, 1307.4, 2614.9, 7, 448),
    "mi355x": (288, 8.0, 2500, 5000, 7, 537.6),    # 7 x 76.8 GB/s
}


def test_every_catalog_gpu_has_a_datasheet_row():
    assert set(hardware_catalog()) == set(DATASHEET)


@pytest.mark.parametrize("name", sorted(DATASHEET))
def test_capacity_is_stored_in_bytes_as_the_gpu_reports_it(name):
    gpu = hardware_catalog()[name]
    quoted_gb = DATASHEET[name][0]
    # The GPU reports up to ~1% less than the quoted GiB (driver-reserved memory: 81,559 MiB of
    # 81,920 on the H100, 143,771 of 144,384 on the H200); a decimal-GB value would read 6.9% low.
    assert 0.99 * quoted_gb <= gpu.hbm_bytes / GiB <= quoted_gb * 1.0001, gpu.hbm_bytes / GiB


@pytest.mark.parametrize("name", sorted(DATASHEET))
def test_bandwidth_and_peaks_match_the_datasheet(name):
    gpu = hardware_catalog()[name]
    _, tbps, bf16, fp8, links, scale_up = DATASHEET[name]
    # 1%: the datasheet figures are quoted to 3-4 significant digits
    assert gpu.hbm_bw_Bps == pytest.approx(tbps * 1e12, rel=0.01)
    assert gpu.peak_flops["bf16"] == pytest.approx(bf16 * 1e12, rel=0.01)
    if fp8 is not None:
        assert gpu.peak_flops["fp8"] == pytest.approx(fp8 * 1e12, rel=0.01)
        assert gpu.peak_flops["fp8"] == pytest.approx(2 * gpu.peak_flops["bf16"], rel=0.01)
    assert gpu.scale_up.links == links
    assert gpu.scale_up.total_bw_Bps == pytest.approx(scale_up * 1e9, rel=0.01)


@pytest.mark.parametrize("name", sorted(DATASHEET))
def test_values_are_in_si_units_and_physical_ranges(name):
    gpu = hardware_catalog()[name]
    assert 16 * GiB < gpu.hbm_bytes < 1024 * GiB                 # bytes, not GB or GiB
    assert 0.5e12 < gpu.hbm_bw_Bps < 20e12                        # bytes/s
    assert all(1e12 < v < 2e16 for v in gpu.peak_flops.values())   # FLOP/s, dense
    assert 10e9 <= gpu.pcie_bw_Bps <= 128e9 and 10e9 <= gpu.nic_bw_Bps <= 100e9
    eff = gpu.efficiency
    assert all(0 < v <= 1 for v in eff.compute.values())
    assert 0 < eff.memory <= 1 and 0 < eff.attention_compute <= 1 and 0 < eff.attention_memory <= 1
    assert 1e-6 <= eff.kernel_overhead_s <= 10e-6
