"""The README is short and runs as written; the documentation site builds without a broken link, and its command-line
reference is the parser's."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def test_the_readme_is_short_and_its_links_exist():
    text = README.read_text()
    assert len(text.encode()) < 6_000, f"README.md is {len(text.encode())} bytes: move the detail into docs/"
    links = re.findall(r"\]\(([^)#]+)\)", text)
    assert links and all((ROOT / link).is_file() for link in links), [
        link for link in links if not (ROOT / link).is_file()
    ]


def test_every_document_the_code_cites_is_in_the_repository():
    """Comments and docstrings cite docs/<page>.md; each exists, and none cites a file kept outside the repository."""
    cited = {}
    for path in [*(ROOT / "src").rglob("*.py"), *(ROOT / "tests").rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py")]:
        text = path.read_text()
        assert "DESIGN.md" not in text or path.name == "test_docs.py", f"{path} cites DESIGN.md: cite docs/design.md"
        for page in re.findall(r"docs/[\w/-]+\.md", text):
            cited.setdefault(page, path)
    missing = {page: str(path) for page, path in cited.items() if not (ROOT / page).is_file()}
    assert cited and not missing, missing
    assert (ROOT / "LICENSE").is_file()


def _documented_objects():
    """The objects the Python API reference shows (its `::: module.name` lines), and for a class its public methods."""
    import importlib
    import inspect

    for line in (ROOT / "docs" / "reference" / "api.md").read_text().splitlines():
        if not line.startswith("::: "):
            continue
        module, _, name = line[4:].strip().rpartition(".")
        obj = getattr(importlib.import_module(module), name)
        yield line[4:].strip(), obj
        if inspect.isclass(obj):
            for attribute, member in vars(obj).items():
                function = member.__func__ if isinstance(member, (classmethod, staticmethod)) else member
                if not attribute.startswith("_") and inspect.isfunction(function):
                    yield f"{line[4:].strip()}.{attribute}", function


def _undocumented_parameters(name: str, obj) -> list[str]:
    """What the Google-style docstring of `obj` lacks: an Args entry per parameter, a Returns section for a value."""
    import inspect

    function = obj.__init__ if inspect.isclass(obj) else obj
    doc = inspect.getdoc(obj) or ""
    signature = inspect.signature(function)
    parameters = [p for p in signature.parameters if p not in ("self", "cls")]
    args = (
        re.split(r"^\s*(?:Returns|Raises|Yields):", doc.split("Args:", 1)[1], flags=re.M)[0] if "Args:" in doc else ""
    )
    missing = [
        f"{name}: parameter {p}" for p in parameters if not re.search(rf"^\s+\**{re.escape(p)}( \(.*\))?:", args, re.M)
    ]
    returns = signature.return_annotation
    if not inspect.isclass(obj) and returns not in (None, "None", inspect.Signature.empty) and "Returns:" not in doc:
        missing.append(f"{name}: Returns")
    return missing


def test_the_public_python_api_documents_every_parameter_and_return_value():
    """Every object of the API reference, and every public method of its classes, has Args and Returns sections
    (Google style, what mkdocstrings renders as parameter tables)."""
    objects = dict(_documented_objects())
    assert len(objects) > 20
    missing = [gap for name, obj in objects.items() for gap in _undocumented_parameters(name, obj)]
    assert not missing, "\n".join(missing)


def test_the_readme_python_quickstart_runs(tmp_path, monkeypatch):
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    assert "epochs=40" in code
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code.replace("epochs=40", "epochs=1"), "README.md", "exec"), scope)  # one epoch: it runs, not how well
    assert {"z", "found", "filled", "scores"} <= set(scope) and len(scope["found"]["dimensions"]) == scope["z"].shape[1]


def test_the_site_builds_strictly_with_a_cli_reference_from_the_parser(tmp_path):
    from infinimodal.parser import build_parser

    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    reference = (ROOT / "docs" / "reference" / "cli.md").read_text()
    parser = build_parser()
    commands = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices
    for name, command in commands.items():
        assert f"## `infinimodal {name}`" in reference
        for action in command._actions:
            for flag in action.option_strings:
                assert flag in reference, (name, flag)
    assert (tmp_path / "site" / "reference" / "api" / "index.html").is_file()
    assert "score_with_maps" in (tmp_path / "site" / "reference" / "api" / "index.html").read_text()


def test_the_tutorial_runs_as_written_on_a_small_cohort(tmp_path, monkeypatch):
    """Every command of docs/tutorial.md, in order, with 2 epochs on 300 subjects instead of 40 on 1,500."""
    import contextlib
    import io
    import json
    import shlex

    from infinimodal.cli import main

    block = re.search(r"```bash\n(.*?)```", (ROOT / "docs" / "tutorial.md").read_text(), re.S).group(1)
    commands = [shlex.split(line) for line in block.strip().splitlines()]
    assert [c[1] for c in commands] == [
        "train",
        "train",
        "report",
        "explain",
        "stability",
        "score",
        "impute",
        "synthesize",
    ]
    monkeypatch.chdir(tmp_path)
    for words in commands:
        # training writes the cohort's tables into ./cohort-tables (300 subjects here); the other commands read that folder
        words = [
            ("cohort-tables:n=300" if w == "cohort-tables" and words[1] == "train" else "2" if w == "40" else w)
            for w in words[1:]
        ]
        words += ["--quiet"] if words[0] in ("train", "report") else []
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
            status = main(words)
        assert status in (0, 4), (
            words,
            err.getvalue()[-2000:],
        )  # 4: synthesize wrote its rows, and its privacy check objected
    assert (
        (tmp_path / "run" / "report.html").is_file()
        and (tmp_path / "z-maps.csv").is_file()
        and (tmp_path / "scores.groups.csv").is_file()
    )
    assert (
        json.loads((tmp_path / "explain.json").read_text())["dimensions"]
        and json.loads((tmp_path / "stability.json").read_text())["summary"]
    )
    assert (tmp_path / "filled" / "clinical.csv").is_file() and (tmp_path / "synthetic" / "privacy.json").is_file()
