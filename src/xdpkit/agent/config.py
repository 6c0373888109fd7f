"""The agent's desired state: ``DIR/xdpkit.toml`` and the files it names, checked completely
without touching the node, so every node accepts or rejects one directory the same way.

    version = 1

    [exporter]
    enabled = true                # the data plane's counters on /metrics (default true)

    [[firewall]]
    interfaces = ["eth0"]         # names, or shell patterns such as "ens*"
    rules = "firewall.rules"      # the firewall rule language; file: sets relative to DIR
    mode = "auto"                 # auto | native | generic

    [[lb]]
    interfaces = ["eth1"]
    config = "lb.toml"            # the load balancer's TOML config
    health = true                 # run the health checks of VIPs that have them (default true)

    [[decap]]                     # IPIP/IP6IP6 decapsulation on the load balancer's backends
    interfaces = ["eth0"]

    [[stats]]                     # traffic counters on interfaces that run no app
    interfaces = ["eth2"]

A file is read from the directory's ``..data`` when it has one (a ConfigMap volume), so the
files of one update are read together. Errors name the file and, where known, the line.
"""
from __future__ import annotations

import fnmatch
import hashlib
import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass, field

from xdpkit.apps.firewall import control as fw_control
from xdpkit.apps.firewall.rules import RuleSet, parse_config as parse_rules
from xdpkit.apps.lb.config import LbConfig, parse_config as parse_lb
from xdpkit.apps.lb.control import check_config as check_lb
from xdpkit.errors import ConfigError
from xdpkit.textfile import read_text

MAIN_FILE = "xdpkit.toml"
VERSION = 1
APPS = ("firewall", "lb", "decap", "stats")
MODES = ("auto", "native", "generic")
IFNAMSIZ = 16
_TOP_KEYS = {"version", "exporter", *APPS}
_KEYS = {"firewall": {"interfaces", "rules", "mode"}, "lb": {"interfaces", "config", "health", "mode"},
         "decap": {"interfaces", "mode"}, "stats": {"interfaces", "mode"}}
_EXPORTER_KEYS = {"enabled"}
_PATTERN = re.compile(r"[*?\[]")
_BAD_IFNAME = re.compile(r"[\s/:]")
_FILE_SET = re.compile(r"(?<=[\s,])file:(?!/)")   # a relative file: set in a rule
_FILE_REF = re.compile(r"(?<=[\s,])file:([^\s,]*)")


@dataclass(frozen=True)
class Entry:
    """One app wanted on the interfaces that ``interfaces`` names or matches."""

    app: str
    interfaces: tuple[str, ...]
    mode: str = "auto"
    where: str = ""               # "xdpkit.toml [[lb]] #1", for messages
    digest: str = ""              # of everything the app is loaded with
    ruleset: RuleSet | None = field(default=None, compare=False)
    lb: LbConfig | None = None
    health: bool = True

    def matches(self, ifname: str) -> bool:
        return any(fnmatch.fnmatchcase(ifname, p) if _PATTERN.search(p) else ifname == p
                   for p in self.interfaces)

    @property
    def names(self) -> list[str]:
        """The interfaces named without a pattern (a node lacking one is told)."""
        return [p for p in self.interfaces if not _PATTERN.search(p)]


@dataclass(frozen=True)
class Desired:
    entries: tuple[Entry, ...] = ()
    exporter: bool = True
    digest: str = ""              # of every file read

    def wanted(self, ifnames) -> tuple[dict[str, Entry], dict[str, str]]:
        """(interface -> entry, interface -> error) on a node with ``ifnames``: an interface two
        entries match is an error (one XDP program per interface), and so is a name missing."""
        present = set(ifnames)
        out: dict[str, Entry] = {}
        errors: dict[str, str] = {}
        for e in self.entries:
            for name in e.names:
                if name not in present:
                    errors[name] = f"{e.where} names interface {name}, which this node does not have"
            for ifname in sorted(present):
                if not e.matches(ifname) or ifname in errors:
                    continue
                if ifname in out:
                    errors[ifname] = f"{out[ifname].where} and {e.where} both match {ifname}"
                    del out[ifname]
                else:
                    out[ifname] = e
        return out, errors


class _Reader:
    """The files of one config directory, each read once, hashed together."""

    def __init__(self, directory: str):
        self.directory = directory
        data = os.path.join(directory, "..data")
        self.base = os.path.realpath(data) if os.path.isdir(data) else directory
        self.sha = hashlib.sha256()
        self.texts: dict[str, str] = {}

    def read(self, name, what: str) -> str:
        if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
            raise ConfigError(f"{what} must be the name of a file in the config directory, not {name!r}")
        if name in self.texts:
            return self.texts[name]
        path = os.path.join(self.base, name)
        if not os.path.isfile(path):
            raise ConfigError(f"{what} names {name}, which is not a file in {self.directory}")
        try:
            text = read_text(path, what)
        except ConfigError as exc:  # by its name: the ..data directory's differs per node and update
            raise ConfigError(str(exc).replace(path, name), hint=exc.hint) from None
        self.sha.update(f"{name}\0{len(text)}\0".encode() + text.encode())
        self.texts[name] = text
        return text

    def set_digests(self, names) -> dict[str, bytes]:
        """sha256 of each address file, read by its stable name (as the rule parser reads it)."""
        out = {}
        for name in names:
            try:
                with open(os.path.join(self.directory, name), "rb") as f:
                    out[name] = hashlib.sha256(f.read()).digest()
            except OSError:
                out[name] = b""
        return out


def _file_sets(rules: str, source: str) -> list[str]:
    """The address files a rules text loads (``file:NAME``); each must be a file of the directory,
    by name, so that every node reads the same."""
    names = []
    for n, line in enumerate(rules.splitlines(), 1):
        for m in _FILE_REF.finditer(" " + line.split("#", 1)[0]):
            name = m.group(1)
            if not name or "/" in name or name.startswith("."):
                raise ConfigError(f"{source}: line {n}: file:{name} must name a file of the config directory "
                                  "(every node reads the same directory)")
            names.append(name)
    return list(dict.fromkeys(names))


def line_of(text: str, table: str, index: int, key: str | None = None) -> int | None:
    """The line of the ``index``-th (0-based) ``[[table]]`` (or ``[table]``), or of ``key`` in it."""
    header = re.compile(rf"^\s*\[\[?\s*{re.escape(table)}\s*\]\]?\s*(#.*)?$")
    seen = -1
    inside = False
    for n, line in enumerate(text.splitlines(), 1):
        if header.match(line):
            seen += 1
            inside = seen == index
            if inside and key is None:
                return n
            continue
        if line.lstrip().startswith("["):
            inside = False
        elif inside and re.match(rf"^\s*{re.escape(key or '')}\s*=", line):
            return n
    return None


def _fail(text: str, message: str, table: str | None = None, index: int = 0, key: str | None = None):
    line = line_of(text, table, index, key) if table else None
    if line is None and table and key:
        line = line_of(text, table, index)
    where = f"{MAIN_FILE}:{line}" if line else MAIN_FILE
    raise ConfigError(f"{where}: {message}")


def _interfaces(text: str, app: str, i: int, value) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        _fail(text, f"[[{app}]] #{i + 1}: interfaces must be a list of interface names or patterns",
              app, i, "interfaces")
    for v in value:
        if not v or len(v) >= IFNAMSIZ or _BAD_IFNAME.search(v):
            _fail(text, f"[[{app}]] #{i + 1}: {v!r} is not an interface name or pattern "
                  f"(1..{IFNAMSIZ - 1} characters, no spaces, '/' or ':')", app, i, "interfaces")
    return tuple(value)


def _entry(reader: _Reader, text: str, app: str, i: int, d) -> Entry:
    where = f"{MAIN_FILE} [[{app}]] #{i + 1}"
    if not isinstance(d, dict):
        _fail(text, f"{app} must be an array of tables ([[{app}]])", app, i)
    unknown = sorted(set(d) - _KEYS[app])
    if unknown:
        _fail(text, f"[[{app}]] #{i + 1}: unknown key {unknown[0]!r}; known: {', '.join(sorted(_KEYS[app]))}",
              app, i, unknown[0])
    if "interfaces" not in d:
        _fail(text, f"[[{app}]] #{i + 1}: interfaces is missing", app, i)
    ifaces = _interfaces(text, app, i, d["interfaces"])
    mode = d.get("mode", "auto")
    if mode not in MODES:
        _fail(text, f"[[{app}]] #{i + 1}: mode must be one of {', '.join(MODES)}, not {mode!r}", app, i, "mode")
    inputs = hashlib.sha256(f"{app}\0{mode}\0".encode())
    if app == "firewall":
        name = d.get("rules")
        if name is None:
            _fail(text, f"[[firewall]] #{i + 1}: rules is missing (a file of rules)", app, i)
        try:
            rules = reader.read(name, "rules")
        except ConfigError as exc:
            _fail(text, f"[[firewall]] #{i + 1}: {exc}", app, i, "rules")
        inputs.update(rules.encode())
        sets = _file_sets(rules, name)
        before = reader.set_digests(sets)
        # a file: set is a file of the config directory, by its stable name
        ruleset = parse_rules(_FILE_SET.sub(f"file:{reader.directory.rstrip('/')}/", "\n" + rules)[1:], source=name)
        after = reader.set_digests(sets)
        changed = next((n for n in sets if after[n] != before[n]), None)
        if changed is not None:   # so the digest is of what was compiled
            raise ConfigError(f"{changed} changed while it was read; it is read again at the next change "
                              "or interval")
        try:
            fw_control.plan(ruleset)  # what an apply would refuse (too many classes, long texts)
        except ConfigError as exc:
            raise ConfigError(f"{name}: {exc}", hint=exc.hint) from None
        for set_name, digest in before.items():
            seen = f"{set_name}\0".encode() + digest
            reader.sha.update(seen)
            inputs.update(seen)
        return Entry(app, ifaces, mode, where, inputs.hexdigest(), ruleset=ruleset)
    if app == "lb":
        name = d.get("config")
        if name is None:
            _fail(text, f"[[lb]] #{i + 1}: config is missing (a load balancer config file)", app, i)
        health = d.get("health", True)
        if not isinstance(health, bool):
            _fail(text, f"[[lb]] #{i + 1}: health must be true or false", app, i, "health")
        try:
            lb_text = reader.read(name, "config")
        except ConfigError as exc:
            _fail(text, f"[[lb]] #{i + 1}: {exc}", app, i, "config")
        cfg = _parse_lb(lb_text, name)
        inputs.update(lb_text.encode() + f"\0{health}".encode())
        return Entry(app, ifaces, mode, where, inputs.hexdigest(), lb=cfg, health=health)
    return Entry(app, ifaces, mode, where, inputs.hexdigest())


def _parse_lb(text: str, name: str) -> LbConfig:
    try:
        cfg = parse_lb(text, source=name)
        check_lb(cfg)  # what an apply would refuse (Maglev tables, sizes)
        return cfg
    except ConfigError as exc:
        msg = str(exc)
        index = _vip_index(text, msg)
        line = line_of(text, "vip", index) if index is not None else None
        if line is not None and msg.startswith(f"{name}: "):
            msg = f"{name}:{line}: {msg[len(name) + 2:]}"
        elif not msg.startswith(name):
            msg = f"{name}: {msg}"
        raise ConfigError(msg, hint=exc.hint) from None


def _vip_index(text: str, msg: str) -> int | None:
    """Which [[vip]] an LB error is about: "vip #N" (parsing) or "VIP proto/addr:port" (checks)."""
    m = re.search(r"\bvip #(\d+)", msg)
    if m:
        return int(m.group(1)) - 1
    m = re.search(r"\bVIP (\w+)/\[?([0-9a-fA-F.:]+?)\]?:(\d+)\b", msg)
    if not m:
        return None
    try:
        vips = tomllib.loads(text).get("vip", [])
        want = (m.group(1), ipaddress.ip_address(m.group(2)), int(m.group(3)))
        for i, v in enumerate(vips):
            if (v.get("protocol"), ipaddress.ip_address(v.get("address")), v.get("port")) == want:
                return i
    except (ValueError, TypeError, AttributeError, tomllib.TOMLDecodeError):
        pass
    return None


def load(directory: str) -> Desired:
    """The desired state in ``directory``; ConfigError names the file (and line) of any fault,
    and nothing of a bad directory is used."""
    try:
        return _load(directory)
    except ConfigError:
        raise
    except RecursionError:
        raise ConfigError("a file of the config nests too deeply to be read") from None
    except Exception as exc:  # whatever the input, one clear line, never a traceback
        raise ConfigError(f"the config cannot be read ({type(exc).__name__}: {exc})") from None


def _load(directory: str) -> Desired:
    if not os.path.isdir(directory):
        raise ConfigError(f"config directory {directory} does not exist",
                          hint="give the directory that holds xdpkit.toml (a ConfigMap volume)")
    reader = _Reader(directory)
    if not os.path.isfile(os.path.join(reader.base, MAIN_FILE)):
        raise ConfigError(f"config directory {directory} has no {MAIN_FILE}",
                          hint="the agent reads the desired state from DIR/xdpkit.toml (see docs/agent.md)")
    text = reader.read(MAIN_FILE, "config")
    try:
        d = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"\(at line (\d+), column \d+\)$", str(exc))
        where = f"{MAIN_FILE}:{m.group(1)}" if m else MAIN_FILE
        raise ConfigError(f"{where}: {re.sub(r' [(]at line .*$', '', str(exc))}") from None
    unknown = sorted(set(d) - _TOP_KEYS)
    if unknown:
        _fail(text, f"unknown table or key {unknown[0]!r}; known: {', '.join(sorted(_TOP_KEYS))}",
              unknown[0], 0)
    version = d.get("version", VERSION)
    if version != VERSION:
        _fail(text, f"version {version!r} is not supported; this agent reads version {VERSION}")
    exporter = d.get("exporter", {})
    if not isinstance(exporter, dict) or set(exporter) - _EXPORTER_KEYS \
            or not isinstance(exporter.get("enabled", True), bool):
        _fail(text, "[exporter] takes one key, enabled = true or false", "exporter", 0)
    entries = []
    for app in APPS:
        tables = d.get(app, [])
        if not isinstance(tables, list):
            _fail(text, f"{app} must be an array of tables ([[{app}]])", app, 0)
        entries += [_entry(reader, text, app, i, t) for i, t in enumerate(tables)]
    named: dict[str, str] = {}
    for e in entries:
        for name in e.names:
            if name in named:
                _fail(text, f"interface {name} is named by {named[name]} and {e.where}: "
                      "one XDP program runs on an interface")
            named[name] = e.where
    return Desired(tuple(entries), exporter.get("enabled", True), reader.sha.hexdigest())


def signature(directory: str) -> tuple:
    """What changes whenever a file the config is read from may have changed: names, sizes,
    times and inodes in the directory (through ``..data``). Cheap, so an interval re-check
    parses a big rule set again only when something changed."""
    data = os.path.join(directory, "..data")
    base = os.path.realpath(data) if os.path.isdir(data) else directory
    out = []
    try:
        names = sorted(os.listdir(base))
    except OSError:
        return ()
    for path in [os.path.join(base, n) for n in names]:
        try:
            st = os.stat(path)
            out.append((path, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino))
        except OSError:
            out.append((path, None))
    return (base, *out)
