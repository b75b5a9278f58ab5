"""Imports run one way: the layer table below, checked from the source with ``ast``.

A part of moesim may import only parts on a lower layer (its own files aside), so the parts form
no cycle. Every import counts, at module level or inside a function: a deferred import is still
a dependency. ``from moesim import __version__`` (the root package, which imports nothing when
loaded) is open to all. ``config`` is the bottom: validated inputs, the error type, dtypes and
spec grammars; ``core`` computes over them with numpy and imports only config's pure modules.
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import moesim

PACKAGE = Path(__file__).resolve().parents[1] / "moesim"

#: Layers, bottom first. A part may import parts of lower layers only.
LAYERS = [
    ["lazy"],                         # lazy package exports (no imports of its own)
    ["config", "presets"],            # validated inputs (pydantic), errors, dtypes, spec grammar
    ["core"],                         # pure numpy cost model over validated configs
    ["traces", "harness"],            # trace files; timing/stats/device primitives
    # spec files -> arrays; column checks; atomic writes; text; the run's all-to-all cost law
    ["inputs", "input_checks", "fileio", "format", "a2a_impl"],
    ["result", "layer_rows", "groups"],  # prediction outputs; per-row core inputs; row groups
    ["montecarlo"],                   # Monte Carlo over the arrays predict hands it
    ["predict"],                      # predict / predict_many (one MoE layer)
    ["step_rows"],                    # a whole-model step's per-row inputs
    ["wholemodel"],                   # whole-model step: attention, dense, MoE layers, memory
    ["serving"],                      # whole-model API, serving curve, predict_many by scope
    ["placement_search", "offload", "measure"],
    ["harness.microbench"],           # microbenchmarks of primitives and of measure's layers
    ["calibration", "reports"],
    ["scenarios"],
    ["cli"],
    ["fuzz"],                         # seeded mutants of scenarios, profiles, models run through the CLI
    ["__main__"],
]
RANK = {part: i for i, layer in enumerate(LAYERS) for part in layer}
#: core may use these modules of config: plain Python and numpy, no pydantic.
CORE_MAY_IMPORT = {"moesim.config", "moesim.config.errors", "moesim.config.dtypes",
                   "moesim.config.specs"}
#: Public names of the root package -> the module that defines them.
ROOT_NAMES = moesim._PUBLIC


def part_of(module: str) -> str | None:
    """The table's part for a dotted module name (``None`` for the root package itself)."""
    names = module.split(".")[1:]
    if not names or names == ["__init__"]:
        return None
    if names[:2] == ["harness", "microbench"]:
        return "harness.microbench"
    return names[0]


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every ``moesim`` import in a file; ``from moesim import X`` is X's home."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "moesim":
                found += [(node.lineno, ROOT_NAMES.get(a.name, f"moesim.{a.name}"))
                          for a in node.names if a.name != "__version__"]
            else:
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}:{node.lineno}: relative import; use absolute imports")
    return [(line, m) for line, m in found if m == "moesim" or m.startswith("moesim.")]


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_the_table_names_every_part():
    parts = {part_of(module_name(p)) for p in SOURCES} - {None}
    assert parts <= set(RANK), f"add these parts to LAYERS: {sorted(parts - set(RANK))}"


def test_imports_follow_the_layers():
    wrong = []
    for path in SOURCES:
        here = module_name(path)
        src = part_of(here)
        for line, target in imported_modules(path):
            dst = part_of(target)
            if dst is None or dst == src:
                continue
            if src is None and dst == "lazy":
                continue  # the root package's lazy exports
            if src is None or RANK[dst] >= RANK[src]:
                wrong.append(f"{here}:{line} ({src}) imports {target} ({dst})")
            elif src == "core" and target not in CORE_MAY_IMPORT:
                wrong.append(f"{here}:{line}: core imports {target} (only {CORE_MAY_IMPORT})")
    assert not wrong, "imports against the layer table:\n" + "\n".join(wrong)


def test_the_layer_check_catches_a_cycle(tmp_path):
    """The checker itself: a core module importing predict is reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from moesim.predict import predict_many\n")
    (line, target), = imported_modules(bad)
    assert (line, target) == (2, "moesim.predict")
    assert RANK[part_of(target)] > RANK["core"]


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys, json; {statement}; print(json.dumps(sorted(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=PACKAGE.parent, check=True)
    return set(json.loads(proc.stdout.splitlines()[-1]))


HEAVY = ("pandas", "pydantic", "torch", "plotly", "scipy.stats", "yaml")


@pytest.mark.parametrize("statement", [
    "import moesim",
    "import moesim.core, moesim.config.errors, moesim.config.dtypes, moesim.config.specs",
    "import pkgutil, importlib, moesim.core as c; [importlib.import_module(m.name) for m in "
    "pkgutil.iter_modules(c.__path__, 'moesim.core.')]",
])
def test_the_pure_parts_load_no_heavy_library(statement):
    loaded = _loaded_after(statement)
    assert not [m for m in HEAVY if m in loaded], f"{statement} loads {[m for m in HEAVY if m in loaded]}"


def test_prediction_loads_neither_torch_nor_plotly_nor_scipy_stats():
    loaded = _loaded_after("import moesim; moesim.predict('mixtral-8x7b', 'h100-sxm', 4)")
    assert not {"torch", "plotly", "scipy.stats"} & loaded, {"torch", "plotly", "scipy.stats"} & loaded


def test_a_missing_subcommand_module_is_an_error_not_a_missing_command(monkeypatch):
    from moesim import cli

    monkeypatch.setattr(cli, "COMMANDS", cli.COMMANDS + ("no_such_command",))
    with pytest.raises(ModuleNotFoundError, match="moesim.cli.no_such_command"):
        cli.build_parser()
