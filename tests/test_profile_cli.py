"""`simserve profile`: one line and exit 2 without a GPU or PyTorch; --check re-fits a folder."""
import shutil

import pytest

from simserve.catalog import profile_dir
from simserve.cli import main


def test_measuring_without_a_gpu_is_one_line_exit_2(tmp_path, capsys):
    try:
        import torch
        if torch.cuda.is_available():
            pytest.skip("a GPU is present: measuring would run")
    except ImportError:
        pass
    out = tmp_path / "gpu"
    assert main(["profile", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and ("PyTorch" in err[0] or "GPU" in err[0])
    assert not out.exists()


def test_check_reports_the_held_out_error(capsys):
    assert main(["profile", "--check", str(profile_dir("h200"))]) == 0
    text = capsys.readouterr().out
    assert "layers (held out, 116 rows)" in text and "layers_fp8" in text
    assert "shape_aware_gemm: true" in text and "measured_ops: true" in text and "NVIDIA H200" in text


def test_check_names_the_missing_table(tmp_path, capsys):
    folder = tmp_path / "partial"
    shutil.copytree(profile_dir("h200"), folder)
    (folder / "attn_decode.csv").unlink()
    assert main(["profile", "--check", str(folder)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "attn_decode.csv" in err[0]


def test_check_of_a_folder_that_is_not_there(tmp_path, capsys):
    assert main(["profile", "--check", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
