"""The plugin's pure parts: the kernel marker's skip/fail rule, leak diffs, lab name validation."""
import pytest

from xdpkit.errors import ConfigError
from xdpkit.lab import Lab
from xdpkit.testing import Snapshot, diff
from xdpkit.testing import plugin


@pytest.fixture
def no_kernel(monkeypatch):
    monkeypatch.setattr(plugin, "kernel_unavailable", lambda: "needs root")


def test_kernel_marker_skips_without_root(no_kernel, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="needs root"):
        plugin._require_kernel()


def test_kernel_marker_fails_under_ci(no_kernel, monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="kernel tests must run under CI=true"):
        plugin._require_kernel()


def test_diff_lists_only_new_things():
    before = Snapshot(netns={"a"}, xdp_programs={1: "old"}, pins={"/p/old"}, fds={0: "x", 1: "y"})
    after = Snapshot(netns={"a", "b"}, xdp_programs={1: "old", 7: "fw"}, pins={"/p/old", "/p/new"},
                     fds={0: "x", 1: "y", 5: "socket:[9]"})
    assert diff(before, after) == [
        "network namespace 'b'",
        "XDP program id 7 (fw)",
        "pinned file /p/new",
        "1 open file descriptor(s): 5 -> socket:[9]",
    ]
    gone = Snapshot(netns=set(), xdp_programs={}, pins=set(), fds={0: "x"})
    assert diff(before, gone) == []  # things that went away are not leaks


@pytest.mark.parametrize("name", ["", "UPPER", "toolong99", "-x", "a_b", "a b", None])
def test_lab_rejects_bad_names(name):
    with pytest.raises(ConfigError):
        Lab(name)


def test_lab_namespace_names():
    lab = Lab("demo-1")
    assert lab.namespaces == ["demo-1-src", "demo-1-dut", "demo-1-dst"]
    assert lab.ns("dut") == "demo-1-dut" and lab.ns("demo-1-dst") == "demo-1-dst"
    with pytest.raises(ConfigError):
        lab.ns("router")


def test_diff_reports_a_leaked_interface():
    from xdpkit.testing.plugin import Snapshot, diff

    before = Snapshot(links={"lo", "eth0"})
    after = Snapshot(links={"lo", "eth0", "veth-leak"})
    assert diff(before, after) == ["network interface 'veth-leak' in the test's own namespace"]
