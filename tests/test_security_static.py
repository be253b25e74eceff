"""Static guards on product code and the web surface (see ../shared/RELIABILITY.md)."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

from core.cli import app_command

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = [*sorted((ROOT / "core").rglob("*.py")), *sorted((ROOT / "views").rglob("*.py")), ROOT / "app.py"]
UNSAFE_LOADERS = {("torch", "jit", "load"), ("onnx", "load"), ("pickle", "load"), ("pickle", "loads"),
                  ("torch", "load")}


def _dotted(node: ast.AST) -> tuple[str, ...]:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return tuple(reversed(parts))


def _findings(path: Path) -> list[str]:
    source = path.read_text()
    lines = source.splitlines()
    out = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        where = f"{path.relative_to(ROOT)}:{node.lineno}"
        if name in UNSAFE_LOADERS:
            safe_torch = name == ("torch", "load") and any(
                k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                for k in node.keywords)
            marked = "safe-load:" in lines[node.lineno - 1]
            if not safe_torch and not marked:
                out.append(f"{where}: {'.'.join(name)}")
        html_kw = [k for k in node.keywords if k.arg == "unsafe_allow_html"
                   and not (isinstance(k.value, ast.Constant) and k.value.value is False)]
        if (html_kw or name[-1:] == ("html",) and name[:1] == ("st",)) and node.args and not isinstance(
                node.args[0], ast.Constant):
            out.append(f"{where}: HTML from a non-constant value")
    return out


def test_no_unsafe_loaders_or_html_from_variables_in_product_code() -> None:
    findings = [f for path in PRODUCT for f in _findings(path)]
    assert findings == []


def test_the_static_check_catches_what_it_should(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import torch, pickle, streamlit as st\n"
                   "torch.load(p)\n"
                   "torch.load(p, weights_only=False)\n"
                   "pickle.loads(b)\n"
                   "torch.jit.load(p)\n"
                   "st.markdown(name, unsafe_allow_html=True)\n"
                   "st.html(user)\n"
                   "torch.load(p, weights_only=True)\n"
                   "st.markdown('<b>x</b>', unsafe_allow_html=True)\n")
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        found = _findings(bad)
    finally:
        ROOT = saved
    assert len(found) == 6, found


def test_streamlit_config_is_hardened() -> None:
    cfg = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert cfg["server"]["address"] == "127.0.0.1"
    assert cfg["server"]["enableXsrfProtection"] is True
    assert cfg["server"]["enableStaticServing"] is False
    assert cfg["server"].get("enableAgentApi", False) is False
    assert cfg["browser"]["gatherUsageStats"] is False
    assert cfg["client"]["showErrorDetails"] == "none"


def test_the_app_command_binds_to_localhost_unless_told_otherwise() -> None:
    assert "--server.address=127.0.0.1" in app_command(["--server.port", "8600"])
    custom = app_command(["--server.address=0.0.0.0"])
    assert "--server.address=127.0.0.1" not in custom and "--server.address=0.0.0.0" in custom
