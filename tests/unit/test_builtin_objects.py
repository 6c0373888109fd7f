"""Shipped objects are judged by content, not file times; without clang the shipped one runs."""
import os
import shutil
import time
from pathlib import Path

import pytest

import xdpkit
from xdpkit import NotSupportedError
from xdpkit import builtin
from xdpkit import compile as compile_mod


@pytest.fixture
def package(tmp_path, monkeypatch):
    """A copy of the package's BPF sources that builtin.py treats as the package."""
    real = Path(xdpkit.__file__).parent
    pkg = tmp_path / "xdpkit"
    shutil.copytree(real, pkg, ignore=shutil.ignore_patterns("*.o", "*.bpf.json", "*.py", "__pycache__"))
    monkeypatch.setattr(builtin, "PACKAGE_DIR", pkg)
    monkeypatch.setattr(compile_mod, "INCLUDE_DIR", pkg / "bpf" / "include")
    monkeypatch.setattr(compile_mod, "SHIM_DIR", pkg / "bpf" / "shim")
    monkeypatch.setattr(builtin, "SOURCES", {"stats": pkg / "observe" / "stats.bpf.c"})
    monkeypatch.setenv("XDPKIT_CACHE_DIR", str(tmp_path / "cache"))
    return pkg


def no_clang():
    raise NotSupportedError("clang (needed to compile BPF C)")


def test_built_object_is_current_until_an_input_changes(package):
    src = builtin.SOURCES["stats"]
    assert not builtin.prebuilt_current(src)
    obj = builtin.build(src)
    assert obj == package / "observe" / "stats.bpf.o" and builtin.prebuilt_current(src)
    future = time.time() + 3600
    for header in package.rglob("*.h"):
        os.utime(header, (future, future))   # as pip leaves them: newer than the object
    assert builtin.prebuilt_current(src) and builtin.builtin_object("stats") == obj
    with open(package / "bpf" / "include" / "xdpkit" / "stats.h", "a") as f:
        f.write("/* changed */\n")
    assert not builtin.prebuilt_current(src)
    assert builtin.builtin_object("stats") != obj          # recompiled into the cache


def test_without_clang_a_stale_object_is_used_with_a_warning(package, monkeypatch):
    src = builtin.SOURCES["stats"]
    obj = builtin.build(src)
    src.write_text(src.read_text() + "\n/* edited after the build */\n")
    monkeypatch.setattr(builtin, "find_clang", no_clang)
    with pytest.warns(RuntimeWarning, match="stats.bpf.o was built from other sources"):
        assert builtin.builtin_object("stats") == obj


def test_without_clang_and_without_an_object_the_error_says_so(package, monkeypatch):
    monkeypatch.setattr(builtin, "find_clang", no_clang)
    with pytest.raises(NotSupportedError) as exc:
        builtin.builtin_object("stats")
    assert "stats" in str(exc.value) and "clang" in exc.value.hint


def test_a_manifest_from_other_flags_is_stale(package):
    src = builtin.SOURCES["stats"]
    builtin.build(src)
    manifest = package / "observe" / "stats.bpf.json"
    manifest.write_text(manifest.read_text().replace("-O2", "-O1"))
    assert not builtin.prebuilt_current(src)
