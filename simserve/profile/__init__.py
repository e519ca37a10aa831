"""`simserve profile`: measure a GPU's operator and layer tables and fit the cost model to them.

The measuring modules (timing, optables, layers, runner) need PyTorch and a CUDA or ROCm GPU
(`pip install 'simserve[profile]'`); `check` refits a written profile folder without either.

A profile folder holds CSV tables and meta.json (GPU name, driver, torch and CUDA/ROCm versions,
date). The fit (simserve.calibration) reads the operator tables only: gemm.csv, attn_prefill.csv,
attn_decode.csv, elementwise.csv. The layer tables (layers.csv, bf16; layers_fp8.csv, W8A8) are held
out and only compared with the fitted model's predictions.
"""

OPERATOR_TABLES = ("gemm", "attn_prefill", "attn_decode", "elementwise")
LAYER_TABLES = ("layers", "layers_fp8")
REQUIRED_TABLES = OPERATOR_TABLES + LAYER_TABLES
