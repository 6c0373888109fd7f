"""The agent's config directory, without a kernel: what it accepts, how it names what is wrong
(file and line, the same on every node), what an interface gets, and the directory watch
seeing kubelet's ConfigMap updates."""
import os
import select

import pytest

from xdpkit.lab.fleet import ConfigMapDir
from xdpkit.agent import config
from xdpkit.dirwatch import DirWatch
from xdpkit.errors import ConfigError

RULES = "policy allow\ndeny src 198.18.66.0/24\n"
LB = """seed = 7
[[vip]]
address = "198.18.200.1"
protocol = "tcp"
port = 80
backends = [{ address = "198.18.21.2" }, { address = "198.18.22.2" }]
"""
MAIN = """version = 1

[[firewall]]
interfaces = ["eth0"]
rules = "firewall.rules"

[[lb]]
interfaces = ["ens*"]
config = "lb.toml"
mode = "native"

[[stats]]
interfaces = ["eth1", "veth?"]
"""


def make(tmp_path, **files):
    d = tmp_path / "cfg"
    d.mkdir(exist_ok=True)
    for name, text in {"xdpkit.toml": MAIN, "firewall.rules": RULES, "lb.toml": LB, **files}.items():
        (d / name).write_text(text)
    return str(d)


def error_of(d) -> str:
    with pytest.raises(ConfigError) as exc:
        config.load(d)
    return str(exc.value)


def test_a_good_directory(tmp_path):
    desired = config.load(make(tmp_path))
    apps = [(e.app, e.interfaces, e.mode) for e in desired.entries]
    assert apps == [("firewall", ("eth0",), "auto"), ("lb", ("ens*",), "native"), ("stats", ("eth1", "veth?"), "auto")]
    assert desired.exporter is True and len(desired.digest) == 64
    fw = desired.entries[0]
    assert [r.text for r in fw.ruleset.rules] == ["deny src 198.18.66.0/24"]
    assert desired.entries[1].lb.seed == 7 and desired.entries[1].health is True
    wanted, errors = desired.wanted(["lo", "eth0", "eth1", "ens3", "veth1", "veth10"])
    assert {k: e.app for k, e in wanted.items()} == {"eth0": "firewall", "eth1": "stats", "ens3": "lb",
                                                     "veth1": "stats"}
    assert errors == {}


def test_digests_change_with_what_an_app_is_made_from(tmp_path):
    d = make(tmp_path)
    before = config.load(d)
    (tmp_path / "cfg" / "lb.toml").write_text(LB.replace("seed = 7", "seed = 8"))
    after = config.load(d)
    assert after.digest != before.digest
    assert after.entries[0].digest == before.entries[0].digest      # the firewall did not change
    assert after.entries[1].digest != before.entries[1].digest


def test_a_file_set_is_read_from_the_directory_and_is_part_of_the_digest(tmp_path):
    d = make(tmp_path, **{"firewall.rules": "deny src file:block.netset\n", "block.netset": "198.18.7.0/24\n"})
    first = config.load(d)
    rule = first.entries[0].ruleset.rules[0]
    assert rule.text == f"deny src file:{d}/block.netset" and rule.src == ((4, 0xC6120700, 24),)
    (tmp_path / "cfg" / "block.netset").write_text("198.18.8.0/24\n")
    assert config.load(d).entries[0].digest != first.entries[0].digest


@pytest.mark.parametrize("files,words", [
    ({"xdpkit.toml": "version = 1\n[[firewall]\n"}, "xdpkit.toml:2: "),
    ({"xdpkit.toml": "version = 2\n"}, "xdpkit.toml: version 2 is not supported"),
    ({"xdpkit.toml": "[[firewal]]\ninterfaces = []\n"}, "xdpkit.toml:1: unknown table or key 'firewal'"),
    ({"xdpkit.toml": MAIN.replace('mode = "native"', 'mode = "turbo"')}, "xdpkit.toml:10: [[lb]] #1: mode must be"),
    ({"xdpkit.toml": MAIN.replace('config = "lb.toml"', 'config = "../lb.toml"')},
     "xdpkit.toml:9: [[lb]] #1: config must be the name of a file in the config directory"),
    ({"xdpkit.toml": MAIN.replace('"eth1", ', '"eth 1", ')}, "xdpkit.toml:13: [[stats]] #1: 'eth 1' is not"),
    ({"xdpkit.toml": MAIN.replace('"eth1", ', '"abcdefghijklmnop", ')}, "is not an interface name"),
    ({"xdpkit.toml": MAIN + '\n[[stats]]\ninterfaces = ["eth0"]\n'},
     "interface eth0 is named by xdpkit.toml [[firewall]] #1 and xdpkit.toml [[stats]] #2"),
    ({"xdpkit.toml": MAIN.replace('interfaces = ["eth0"]\n', "")}, "xdpkit.toml:3: [[firewall]] #1: interfaces is missing"),
    ({"xdpkit.toml": "[exporter]\nenabled = 1\n"}, "xdpkit.toml:1: [exporter] takes one key"),
    ({"firewall.rules": RULES + "deny sport 70000\n"}, "firewall.rules: line 3: "),
    ({"lb.toml": LB + '[[vip]]\naddress = "198.18.200.2"\nprotocol = "tcp"\nport = 80\nbackends = [{ address = "x" }]\n'},
     "lb.toml:7: VIP tcp/198.18.200.2:80 backend #1: backend address 'x'"),
    ({"lb.toml": "seed = [\n"}, "lb.toml: "),
])
def test_faults_name_their_file_and_line(tmp_path, files, words):
    assert words in error_of(make(tmp_path, **files))


def test_the_same_bad_directory_gives_the_same_error_wherever_it_is(tmp_path):
    bad = {"firewall.rules": RULES + "bogus\n"}
    for node in ("node1", "node2"):
        (tmp_path / node).mkdir()
    a, b = (error_of(make(tmp_path / node, **bad)) for node in ("node1", "node2"))
    assert a == b == "firewall.rules: line 3: a rule starts with allow, deny, ratelimit; got 'bogus'; nothing was applied"


def test_missing_directory_and_main_file(tmp_path):
    assert "does not exist" in error_of(str(tmp_path / "nope"))
    assert "has no xdpkit.toml" in error_of(str(tmp_path))


def test_conflicts_and_missing_names_are_per_node(tmp_path):
    desired = config.load(make(tmp_path, **{"xdpkit.toml": MAIN.replace('["ens*"]', '["eth*"]')}))
    wanted, errors = desired.wanted(["eth0", "eth1", "eth2"])
    assert wanted["eth2"].app == "lb" and "eth0" not in wanted and "eth1" not in wanted
    assert errors["eth0"] == "xdpkit.toml [[firewall]] #1 and xdpkit.toml [[lb]] #1 both match eth0"
    wanted, errors = desired.wanted(["eth2"])
    assert errors == {"eth0": "xdpkit.toml [[firewall]] #1 names interface eth0, which this node does not have",
                      "eth1": "xdpkit.toml [[stats]] #1 names interface eth1, which this node does not have"}


def test_a_configmap_volume_is_read_through_its_data_link(tmp_path):
    files = {"xdpkit.toml": MAIN, "firewall.rules": RULES, "lb.toml": LB}
    cm = ConfigMapDir(tmp_path / "cm", files)
    first = config.load(cm.path)
    assert os.path.islink(os.path.join(cm.path, "xdpkit.toml"))
    cm.update({**files, "lb.toml": LB.replace("seed = 7", "seed = 9")})
    second = config.load(cm.path)
    assert second.entries[1].lb.seed == 9 and second.digest != first.digest


def test_the_watch_sees_a_configmap_update_and_a_plain_edit(tmp_path):
    files = {"xdpkit.toml": MAIN, "firewall.rules": RULES, "lb.toml": LB}
    cm = ConfigMapDir(tmp_path / "cm", files)
    with DirWatch(cm.path) as w:
        assert select.select([w], [], [], 0.05)[0] == []
        cm.update({**files, "firewall.rules": RULES + "deny udp dport 9\n"})
        assert select.select([w], [], [], 2.0)[0] == [w]
        assert "..data" in w.changes()
        assert w.changes() == []
    plain = tmp_path / "plain"
    plain.mkdir()
    with DirWatch(str(plain)) as w:
        (plain / "xdpkit.toml").write_text(MAIN)
        assert select.select([w], [], [], 2.0)[0] == [w] and "xdpkit.toml" in w.changes()


def test_the_watch_follows_a_directory_that_is_replaced(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    with DirWatch(str(d)) as w:
        os.rename(d, tmp_path / "old")
        assert select.select([w], [], [], 2.0)[0] == [w] and "" in w.changes() and not w.watching
        d.mkdir()
        assert set(w.changes()) == {""} and w.watching   # back: everything in it may be new
        (d / "x").write_text("1")
        assert select.select([w], [], [], 2.0)[0] == [w] and "x" in w.changes()


def test_the_signature_changes_with_any_file_the_config_reads(tmp_path):
    d = make(tmp_path, **{"firewall.rules": "deny src file:block.netset\n", "block.netset": "198.18.7.0/24\n"})
    sig = config.signature(d)
    assert config.signature(d) == sig
    (tmp_path / "cfg" / "block.netset").write_text("198.18.8.0/24\n")  # an address file
    assert config.signature(d) != sig
    sig = config.signature(d)
    (tmp_path / "cfg" / "new.txt").write_text("x")                  # a new file
    assert config.signature(d) != sig
    cm = ConfigMapDir(tmp_path / "cm", {"xdpkit.toml": MAIN, "firewall.rules": RULES, "lb.toml": LB})
    sig = config.signature(cm.path)
    cm.update({"xdpkit.toml": MAIN, "firewall.rules": RULES, "lb.toml": LB})   # same bytes, new ..data
    assert config.signature(cm.path) != sig


@pytest.mark.parametrize("files,words", [
    ({"firewall.rules": "deny src file:/etc/hosts.netset\n"}, "firewall.rules: line 1: file:/etc/hosts.netset must name"),
    ({"firewall.rules": "# file:/x in a comment is fine\ndeny src file:../up.netset\n"},
     "firewall.rules: line 2: file:../up.netset must name a file of the config directory"),
    ({"xdpkit.toml": 'version = 1\n[[firewall]]\ninterfaces = ["eth0"]\nrules = ["x"]\n'},
     "rules must be the name of a file in the config directory, not ['x']"),
    ({"xdpkit.toml": 'version = 1\n[[lb]]\ninterfaces = ["eth0"]\nconfig = {a = 1}\n'},
     "config must be the name of a file in the config directory, not {'a': 1}"),
    ({"xdpkit.toml": "x = " + "[" * 5000 + "]" * 5000 + "\n"}, "nests too deeply"),
    ({"firewall.rules": "deny src file:b.netset\n", "b.netset": "198.18.0.0/24\n\xff\n"},
     "b.netset"),
])
def test_odd_inputs_get_one_clear_error(tmp_path, files, words):
    files = {k: v.encode("latin-1") if "\xff" in v else v for k, v in files.items()}
    d = tmp_path / "cfg"
    d.mkdir()
    for name, text in {"xdpkit.toml": MAIN, "firewall.rules": RULES, "lb.toml": LB, **files}.items():
        (d / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    assert words in error_of(str(d))


def test_a_non_utf8_file_is_named_the_same_on_every_node(tmp_path):
    files = {"xdpkit.toml": MAIN, "firewall.rules": RULES, "lb.toml": LB}
    messages = set()
    for node in ("a", "b"):
        cm = ConfigMapDir(tmp_path / node, files)
        (tmp_path / node / os.readlink(os.path.join(cm.path, "..data")) / "lb.toml").write_bytes(b"seed = 1\n\xff\n")
        messages.add(error_of(cm.path))
    assert len(messages) == 1 and "config lb.toml: line 2 is not UTF-8" in messages.pop()


def test_a_file_set_changing_while_it_is_read_is_refused_not_half_used(tmp_path, monkeypatch):
    d = make(tmp_path, **{"firewall.rules": "deny src file:block.netset\n", "block.netset": "198.18.7.0/24\n"})
    real = config.parse_rules

    def parse_then_change(*args, **kw):
        out = real(*args, **kw)
        (tmp_path / "cfg" / "block.netset").write_text("198.18.8.0/24\n")   # a feed updated meanwhile
        return out

    monkeypatch.setattr(config, "parse_rules", parse_then_change)
    assert "block.netset changed while it was read" in error_of(d)
