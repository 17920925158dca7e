"""The package's import graph: no cycle, the NumPy engine never imports torch, library code never
imports the command line, and every module imports on its own from a fresh start.

The graph is read from the source with ``ast``: every ``import`` counts, those inside functions
too (a cycle hidden in a function is still a cycle). An edge to a module's own parent package is
not counted: Python runs a package's ``__init__`` before any of its modules, and an ``__init__``
that gathers its modules' names is not a cycle.
"""

from __future__ import annotations

import ast
import graphlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import nnscratch
from helpers import cli_env

PACKAGE = Path(nnscratch.__file__).resolve().parent
#: Run as ``python -m nnscratch``: importing it runs the command line.
ENTRY_POINTS = ("nnscratch.__main__",)


def module_files() -> dict[str, Path]:
    """Every module of the package: dotted name -> file."""
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


MODULES = module_files()


def imported_names(name: str, path: Path) -> set[str]:
    """Every absolute module name that ``name`` imports anywhere in its file (relative imports resolved)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            submodules = {f"{base}.{alias.name}" for alias in node.names} & set(MODULES)
            found.update(submodules)  # ``from pkg import module`` needs the module
            if len(submodules) < len(node.names):
                found.add(base)
    return found


def internal_graph() -> dict[str, set[str]]:
    """module -> the package's modules it imports (its own parent packages left out)."""
    graph = {}
    for name, path in MODULES.items():
        deps = {d for d in imported_names(name, path) if d in MODULES}
        graph[name] = {d for d in deps if d != name and not name.startswith(d + ".")}
    return graph


def test_the_walk_finds_the_package():
    assert {"nnscratch", "nnscratch.api", "nnscratch.cli.main", "nnscratch.files.atomic", "nnscratch.numpy_engine.model",
            "nnscratch.data.idx"} <= set(MODULES)
    assert "nnscratch.io" not in MODULES  # renamed: atomic.py (atomic writes) vs model_io.py (model files)


def test_no_import_cycle():
    try:
        order = list(graphlib.TopologicalSorter(internal_graph()).static_order())
    except graphlib.CycleError as exc:
        pytest.fail(f"import cycle: {' -> '.join(exc.args[1])}")
    assert set(order) == set(MODULES)


def test_numpy_engine_never_imports_torch():
    for name, path in MODULES.items():
        if name.startswith("nnscratch.numpy_engine"):
            torch = {m for m in imported_names(name, path) if m == "torch" or m.startswith("torch.")}
            assert not torch, f"{name} imports {sorted(torch)}"


def test_library_code_never_imports_the_cli():
    """No module outside the command-line package (``nnscratch.cli``) imports anything of it."""
    for name, path in MODULES.items():
        if name == "nnscratch.cli" or name.startswith("nnscratch.cli.") or name in ENTRY_POINTS:
            continue
        cli = {m for m in imported_names(name, path) if m == "nnscratch.cli" or m.startswith("nnscratch.cli.")}
        assert not cli, f"{name} imports {sorted(cli)} (the command line)"


def test_the_layout_has_a_package_per_concern():
    """The top level keeps only what every package uses; everything else lives in its package."""
    top = {p.stem for p in PACKAGE.glob("*.py")}
    assert top <= {"__init__", "__main__", "api", "engines", "errors", "threads"}, sorted(top)
    for package in ("numpy_engine", "torch_engine", "model", "training", "run", "files", "report", "cli", "data"):
        assert (PACKAGE / package / "__init__.py").is_file(), package


#: Imports each module named in argv in a child forked from this fresh interpreter, which holds the
#: third-party libraries the package uses (imported once, to keep the test quick) but never torch,
#: pyplot or any module of nnscratch: each child imports its module, and through it the modules it
#: needs, from nothing. Prints {module: {"ok", "error", "torch"}} as JSON.
_DRIVER = """
import importlib, json, os, sys
import matplotlib, numpy, PIL.Image, safetensors.numpy, scipy.linalg, threadpoolctl, tqdm
assert not any(m.startswith(("nnscratch", "torch", "matplotlib.pyplot")) for m in sys.modules)
results, running = {}, []


def collect(name, r, pid):
    with os.fdopen(r) as f:
        results[name] = json.loads(f.read() or '{"ok": false, "error": "the child died"}')
    os.waitpid(pid, 0)


for name in sys.argv[1:]:  # two children at a time (each forked from this clean process), collected in order
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            importlib.import_module(name)
            report = {"ok": True, "torch": "torch" in sys.modules}
        except BaseException as exc:
            report = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        os.write(w, json.dumps(report).encode())
        os._exit(0)
    os.close(w)
    running.append((name, r, pid))
    if len(running) == 2:
        collect(*running.pop(0))
for child in running:
    collect(*child)
print(json.dumps(results))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_every_module_imports_alone_from_a_fresh_start():
    """In dependency order (a module after everything it imports), each in a process of its own."""
    order = [m for m in graphlib.TopologicalSorter(internal_graph()).static_order() if m not in ENTRY_POINTS]
    proc = subprocess.run([sys.executable, "-c", _DRIVER, *order], capture_output=True, text=True,
                          timeout=600, env=cli_env())
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    assert list(results) == order
    failed = [f"{name}: {r['error']}" for name, r in results.items() if not r["ok"]]
    assert not failed, "\n".join(failed)
    for name, r in results.items():
        if name.startswith("nnscratch.numpy_engine"):
            assert not r["torch"], f"importing {name} loads torch"


def test_import_nnscratch_stays_light():
    """The API's names are imported on first use: ``import nnscratch`` (the CLI's first line) loads no numpy."""
    code = "import sys, nnscratch; print(sorted({m.split('.')[0] for m in sys.modules} & {'numpy', 'torch'}))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=cli_env())
    assert proc.stdout.strip() == "[]", proc.stderr


def test_the_package_exports_the_api_lazily():
    assert nnscratch.__version__
    assert nnscratch.api.compare is not None and nnscratch.Run is nnscratch.api.Run
    assert {"api", "Run", "RunConfig", "UsageError", "DataError", "load_dataset"} <= set(dir(nnscratch))
    with pytest.raises(AttributeError):
        nnscratch.no_such_name


def test_a_numpy_run_never_imports_torch_and_torch_gets_the_runs_threads_when_it_comes():
    """``set_threads`` leaves torch unimported (its import is 3 s of a NumPy-only run's start); the
    torch engine's package, imported later, takes the run's count."""
    code = ("import sys; import nnscratch.threads as t; t.set_threads(1); assert 'torch' not in sys.modules; "
            "import nnscratch.torch_engine, torch; assert torch.get_num_threads() == 1, torch.get_num_threads(); "
            "t.set_threads(2); assert torch.get_num_threads() == min(2, t.usable_cores()); print('ok')")
    done = subprocess.run([sys.executable, "-c", code], env=cli_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
