"""The house's layers point one way: no import circle between the package's modules or packages, and no import up the
layers that `benchmarks/structure.py` declares (cli -> commands -> api -> {train, evaluation, ...} -> {config, model,
data, ...} -> {latents, aggregators, likelihoods, ...} -> {settings, outputs, options, errors})."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "structure.py"


def _structure():
    spec = importlib.util.spec_from_file_location("structure", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_import_circle_and_no_import_up_the_layers():
    found = _structure().measure()
    assert found["files"] > 50 and found["imports"] > 150  # it read the package
    assert found["module_cycles"] == [] and found["package_cycles"] == []
    assert found["upward_imports"] == []
    assert found["modules_without_layer"] == [], "a new module needs its layer in benchmarks/structure.py's LAYERS"


def test_the_structure_tool_finds_a_planted_cycle_and_an_upward_import(tmp_path, monkeypatch):
    structure = _structure()
    assert structure.cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert structure.cycles({"a": {"b"}, "b": set()}) == []
    package = tmp_path / "infinimodal"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "model.py").write_text("from .api import MultimodalVAE\n")  # a model reaching up to the facade
    (package / "api.py").write_text("from .model import MultimodalModule\n")
    monkeypatch.setattr(structure, "ROOT", package)
    found = structure.measure()
    assert found["module_cycles"] == [["api", "model"]]
    assert found["upward_imports"] == [{"from": "model", "to": "api", "in_function": False}]


def test_ruff_finds_no_defect():
    """`make lint`: pyflakes and syntax errors ([tool.ruff] in pyproject.toml) over the package, tests and benchmarks, and
    the tree as `ruff format` writes it."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent))
    assert ruff is not None, "ruff is a dev dependency: pip install -e '.[dev]'"
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [ruff, "check", "--no-cache", "src", "tests", "benchmarks"], cwd=root, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout[-3000:]
    formatted = subprocess.run(
        [ruff, "format", "--check", "--no-cache", "src", "tests", "benchmarks", "docs/hooks.py"],
        cwd=root,
        capture_output=True,
        text=True,
    )
    assert formatted.returncode == 0, (
        "run `ruff format src tests benchmarks docs/hooks.py`:\n" + formatted.stdout[-3000:]
    )


def test_mypy_finds_no_type_error():
    """`make lint`: the package's types ([tool.mypy] in pyproject.toml, which names the files and the checks)."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    mypy = shutil.which("mypy", path=str(Path(sys.executable).parent))
    assert mypy is not None, "mypy is a dev dependency: pip install -e '.[dev]'"
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([mypy], cwd=root, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-1000:]


def test_compare_ranks_and_evaluate_prints_what_the_metric_catalogue_declares():
    from infinimodal.evaluation.catalogue import METRICS, summary_keys
    from infinimodal.evaluation.compare import _direction

    assert summary_keys() == (
        "elbo",
        "log_likelihood",
        "knn_error",
        "active_dims",
        "kl_active",
        "sticks_99",
        "linear_probe_accuracy",
        "coherence",
    )
    for metric in METRICS:  # a nested entry takes its metric's direction
        assert _direction(metric.key) == _direction(f"{metric.key} / 5") == metric.direction
    assert _direction("imputation_mse / mri / model") == -1 and _direction("imputation_mse / mri / ridge") == 0
    assert (
        _direction("val_label_error") == -1
        and _direction("n_test") == 0
        and _direction("knn_error_decoder_input / 3") == -1
    )
