"""The front door: the README's test command shows pytest's count, `--version`, declared = imported deps."""
import ast
import re
import subprocess
import sys
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = None

ROOT = Path(__file__).resolve().parents[1]
IMPORT_NAME = {"pyyaml": "yaml"}      # distribution name -> import name where they differ


def _pyproject() -> dict:
    text = (ROOT / "pyproject.toml").read_text()
    if tomllib is not None:
        return tomllib.loads(text)
    import re as _re
    deps = _re.findall(r'^\s*"([A-Za-z0-9_.\-]+)', text.split("dependencies = [", 1)[1].split("]", 1)[0], _re.M)
    return {"project": {"dependencies": deps, "optional-dependencies": {}}}


def _dist(req: str) -> str:
    return re.split(r"[<>=!\[;~ ]", req, maxsplit=1)[0].lower()


def _third_party_imports(folder: Path) -> set[str]:
    names = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != "simserve"}


def test_readme_test_command_prints_the_summary_line(tmp_path):
    readme = (ROOT / "README.md").read_text()
    assert "python -m pytest -q" in readme
    (tmp_path / "test_one.py").write_text("def test_ok():\n    assert 1 + 1 == 2\n")
    # the project's own pytest settings, on a one-test folder: the README command must show the count
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "-c", str(ROOT / "pyproject.toml"), "--rootdir", str(tmp_path), str(tmp_path)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert re.search(r"^1 passed", res.stdout, re.M), res.stdout


def test_version():
    import simserve
    res = subprocess.run([sys.executable, "-m", "simserve.cli", "--version"], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.strip() == f"simserve {simserve.__version__}", res.stdout


def test_declared_dependencies_are_the_imported_ones():
    project = _pyproject()["project"]
    declared = {IMPORT_NAME.get(_dist(r), _dist(r)) for r in project["dependencies"]}
    extras = {IMPORT_NAME.get(_dist(r), _dist(r)) for reqs in project.get("optional-dependencies", {}).values()
              for r in reqs}
    used = _third_party_imports(ROOT / "simserve")
    assert declared <= used, f"declared but never imported: {sorted(declared - used)}"
    assert used <= declared | extras, f"imported but not declared: {sorted(used - declared - extras)}"


def test_readme_estimate_and_collective_examples_run(capsys):
    """Every `simserve estimate` / `simserve collective` line of the README exits 0 (fits, runs)."""
    import shlex

    from simserve.cli import main

    lines = [ln.split("#")[0].strip() for ln in (ROOT / "README.md").read_text().splitlines()]
    examples = [ln for ln in lines if ln.startswith(("simserve estimate", "simserve collective"))
                and "--plot" not in ln]
    assert examples
    for line in examples:
        assert main(shlex.split(line)[1:]) == 0, line


def test_every_bundled_example_runs_by_name(tmp_path):
    """`simserve run NAME` for each shipped example (first 6 requests: the layout fits and runs)."""
    from simserve.cli import EXAMPLES, main

    names = sorted(p.stem for p in EXAMPLES.glob("*.yaml"))
    assert "default" in names and "llama70b-tp8-h100" in names
    for name in names:
        assert main(["run", name, "--out", str(tmp_path / name), "--quiet",
                     "--set", "workload.num_requests=6"]) == 0, name
        assert (tmp_path / name / "summary.json").is_file()
