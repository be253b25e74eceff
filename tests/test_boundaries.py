"""core/ is plain Python + torch: importing it never imports streamlit."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def core_modules() -> list[str]:
    mods = []
    for path in sorted((ROOT / "core").rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods.append(".".join(parts))
    return mods


def test_no_core_file_imports_streamlit() -> None:
    offenders = []
    for path in (ROOT / "core").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n == "streamlit" or n.startswith("streamlit.") for n in names):
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_importing_every_core_module_leaves_streamlit_unloaded() -> None:
    mods = core_modules()
    assert "core.zoo" in mods and "core.freeze" in mods
    code = ("import importlib, sys\n"
            f"for m in {mods!r}:\n    importlib.import_module(m)\n"
            "print('streamlit' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"


def _loaded_after(code: str, home: Path) -> set[str]:
    """The heavy packages a fresh interpreter has imported after running `code`."""
    probe = code + "\nimport sys\nprint(*sorted({'torch', 'timm', 'torchmetrics'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True,
                         env={**os.environ, "TRANSFER_STUDIO_HOME": str(home)})
    return set(out.stdout.split("\n")[-2].split()) if out.stdout.strip() else set()


def test_listing_runs_and_datasets_on_the_command_line_imports_no_torch(home: Path, tmp_path: Path) -> None:
    """`transfer-studio runs list` took ~3 s, `--help` ~5 s: building the parser imported every task (timm), the
    run table imported torch for checkpoints it never reads and every task for their titles."""
    from core import runs, trainset
    from core.config import FreezeConfig, RunConfig, TrainConfig
    from tests.synthetic import make_colour_folders

    folder = make_colour_folders(tmp_path / "colours", train=2, val=1)
    config = RunConfig("test_resnet", str(folder), FreezeConfig("all"), TrainConfig(epochs=1), pretrained=False,
                       name="listed")
    runs.create_run(config, trainset.resolve(str(folder)))  # in `home`, where the probe lists runs
    code = ("from core.cli import main\n"
            "for argv in (['runs', 'list'], ['runs', 'stop', '--run', 'nothing'], ['data', 'list']):\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
            "from core.cli import build_parser\nbuild_parser()")
    assert _loaded_after(code, home) == set()


def test_an_export_process_does_not_import_torchmetrics(tmp_path: Path) -> None:
    """torchmetrics' import (~1.5–3 s: torch._dynamo, scipy) was paid by every export for a summary it only reads."""
    assert _loaded_after("import core.export, core.evaluate, core.engine", tmp_path) == {"torch", "timm"}
