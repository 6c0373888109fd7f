"""The folders are the layers, and imports only point down:

    errors  <-  _sys  <-  core (xdpkit/*.py, maps/, afxdp/)  <-  ui/  <-  observe/, lab/  <-  testing/  <-  apps/  <-  cli/

Only core imports _sys (nothing above touches cffi, pyroute2 or raw fds); observe/ and lab/
are siblings that do not import each other; nothing imports cli/. Imports inside functions
count too. pyroute2 and cffi are imported by _sys only. errors.py (the exception tree) is the one
core module below _sys: every layer raises its errors."""
import ast
from pathlib import Path

import xdpkit

PACKAGE = Path(xdpkit.__file__).parent

RANK = {"errors": -1, "_sys": 0, "core": 1, "ui": 2, "observe": 3, "lab": 3, "testing": 4, "apps": 5, "agent": 6, "cli": 7}


def layer_of(module: str) -> str:
    parts = module.split(".")
    if parts[0] != "xdpkit":
        return "external"
    if len(parts) == 1:
        return "core"
    top = parts[1]
    if top == "__main__":
        return "cli"
    if top == "errors":
        return "errors"
    return top if top in RANK else "core"


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(rel.parts)
        yield name.removesuffix(".__init__"), path


def imports_of(path: Path, name: str):
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            yield node.lineno, target
            for alias in node.names:  # `from xdpkit import lab` imports the module xdpkit.lab
                full = f"{target}.{alias.name}"
                if layer_of(full) != layer_of(target) and (PACKAGE.parent / full.replace(".", "/")).exists():
                    yield node.lineno, full


def violations():
    out = []
    for name, path in modules():
        src_layer = layer_of(name)
        for line, target in imports_of(path, name):
            where = f"{path.relative_to(PACKAGE.parent)}:{line}"
            if target.split(".")[0] in ("pyroute2", "cffi") and src_layer != "_sys":
                out.append(f"{where}: {name} imports {target} (only _sys talks to pyroute2/cffi)")
                continue
            dst_layer = layer_of(target)
            if dst_layer == "external" or dst_layer == src_layer:
                continue
            if dst_layer == "_sys" and src_layer != "core":
                out.append(f"{where}: {name} ({src_layer}) imports {target}: only core imports _sys")
            elif RANK[dst_layer] >= RANK[src_layer]:
                out.append(f"{where}: {name} ({src_layer}) imports {target} ({dst_layer}): upward or sideways")
    return out


def test_imports_only_point_down():
    assert violations() == []


def test_the_layer_check_sees_a_violation(tmp_path, monkeypatch):
    bad = tmp_path / "xdpkit" / "observe"
    bad.mkdir(parents=True)
    (bad / "bad.py").write_text("from xdpkit._sys import netns\nfrom xdpkit.apps.lb import control\n")
    found = [t for _, t in imports_of(bad / "bad.py", "xdpkit.observe.bad")]
    assert "xdpkit._sys" in found and "xdpkit.apps.lb" in found
    assert layer_of("xdpkit.apps.lb.control") == "apps" and layer_of("xdpkit.kernel") == "core"


def test_every_folder_is_a_known_layer():
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders - {"maps", "afxdp", "bpf", "examples"} <= set(RANK), folders   # maps/, afxdp/: core
