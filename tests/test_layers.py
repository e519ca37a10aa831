"""Layer 1 (pure models) never imports SimPy (docs/architecture.md, Layers): importing the pure
packages in a fresh interpreter leaves `simpy` out of sys.modules. A fresh subprocess, because the
test session itself has SimPy loaded."""
import subprocess
import sys

import pytest

PURE = ("simserve.iteration", "simserve.cost", "simserve.collectives", "simserve.catalog",
        "simserve.comm.compile", "simserve.comm.tuner", "simserve.network.topology", "simserve.network.fluid")


@pytest.mark.parametrize("module", PURE)
def test_pure_module_imports_without_simpy(module):
    code = f"import sys, {module}; print('simpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", f"{module} imports SimPy"


def test_the_check_sees_simpy_when_it_is_imported():
    """The check can fail: the SimPy world does import SimPy."""
    code = "import sys, simserve.comm.communicator; print('simpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
