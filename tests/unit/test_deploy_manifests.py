"""deploy/: the Kubernetes manifests are valid for a named Kubernetes version and say what the
agent needs; the example config parses with the apps' own parsers; the Containerfile builds from
files that exist and runs `xdpkit agent` without a compiler.

Validation is offline and strict (an unknown field is an error) against the API's OpenAPI schemas
that kubernetes-validate ships. The schemas check names and types, not values (enums, ranges,
cross-field rules): the tests below check the values that matter.
"""
import copy
import fnmatch
import ipaddress
import json
import shlex
import tomllib
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import all_versions

from xdpkit.apps.firewall.rules import parse_config as parse_firewall_rules
from xdpkit.apps.lb.config import parse_config as parse_lb_config

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "deploy" / "kubernetes"
CONTAINERFILE = ROOT / "deploy" / "Containerfile"

#: The newest version whose schemas kubernetes-validate 1.37.0 ships
#: (kubernetes_validate.utils.latest_version() == "1.37.0").
KUBERNETES_VERSION = "1.37"
NAMESPACE = "xdpkit-system"
CAPABILITIES = {"BPF", "NET_ADMIN", "PERFMON", "SYS_ADMIN"}
DOC_NETS = [ipaddress.ip_network("198.18.0.0/15"), ipaddress.ip_network("2001:db8::/32")]


def _documents() -> list[tuple[str, dict]]:
    docs = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs += [(path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    return docs


DOCUMENTS = _documents()


def _one(kind: str) -> dict:
    found = [doc for _, doc in DOCUMENTS if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def _validate(doc: dict) -> str:
    return kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


@pytest.fixture(scope="module")
def daemonset():
    return _one("DaemonSet")


@pytest.fixture(scope="module")
def pod(daemonset):
    return daemonset["spec"]["template"]["spec"]


@pytest.fixture(scope="module")
def container(pod):
    assert len(pod["containers"]) == 1
    return pod["containers"][0]


@pytest.fixture(scope="module")
def args(container):
    argv = container["args"]
    assert len(argv) % 2 == 0 and all(a.startswith("--") for a in argv[::2]), argv
    return dict(zip(argv[::2], argv[1::2]))


@pytest.fixture(scope="module")
def metrics_port(container):
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    return ports["metrics"]


@pytest.fixture(scope="module")
def config_data():
    return _one("ConfigMap")["data"]


# ---- the schemas --------------------------------------------------------------------------------

def test_the_named_version_is_one_the_validator_ships():
    # validate() silently falls back to the newest schemas not newer than the version asked for;
    # the version must be one it has, and each validation below checks it was the one used.
    assert KUBERNETES_VERSION in {".".join(v.split(".")[:2]) for v in all_versions()}


def test_kustomization_lists_exactly_the_manifests():
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    resources = kustomization["resources"]
    assert len(resources) == len(set(resources))
    present = {p.name for p in MANIFESTS.glob("*.y*ml")} - {"kustomization.yaml"}
    assert set(resources) == present


@pytest.mark.parametrize("name,doc", DOCUMENTS, ids=[f"{n}:{d['kind']}" for n, d in DOCUMENTS])
def test_every_document_is_valid_for_the_named_version(name, doc):
    assert _validate(doc) == KUBERNETES_VERSION


def test_the_documents_are_the_expected_objects():
    kinds = sorted((doc["kind"], doc["metadata"]["name"]) for _, doc in DOCUMENTS)
    assert kinds == [("ConfigMap", "xdpkit-config"), ("DaemonSet", "xdpkit-agent"),
                     ("Namespace", NAMESPACE), ("Service", "xdpkit-agent-metrics"),
                     ("ServiceAccount", "xdpkit-agent")]
    for _, doc in DOCUMENTS:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == NAMESPACE
    # hostNetwork, hostPath and added capabilities: refused by the baseline Pod Security level.
    assert _one("Namespace")["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"


def _set(doc: dict, path: str, value) -> dict:
    doc = copy.deepcopy(doc)
    *parents, last = path.split(".")
    node = doc
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    node[last] = value
    return doc


def _rename(doc: dict, path: str, new: str) -> dict:
    doc = copy.deepcopy(doc)
    *parents, last = path.split(".")
    node = doc
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    node[new] = node.pop(last)
    return doc


@pytest.mark.parametrize("mutate", [
    lambda ds: _rename(ds, "spec.template.spec.hostNetwork", "hostNetwrok"),
    lambda ds: _rename(ds, "spec.template.spec.containers.0.securityContext.capabilities", "capabilties"),
    lambda ds: _rename(ds, "spec.template.spec.containers.0.volumeMounts.0.mountPath", "mountpath"),
    lambda ds: _rename(ds, "spec.updateStrategy.rollingUpdate", "rollingupdate"),
    lambda ds: _set(ds, "spec.template.spec.containers.0.ports.0.containerPort", "9435"),
    lambda ds: _set(ds, "spec.template.spec.hostNetwork", "yes"),
], ids=["hostNetwrok", "capabilties", "mountpath", "rollingupdate", "port-as-string", "bool-as-string"])
def test_the_validator_rejects_a_broken_daemonset(daemonset, mutate):
    broken = mutate(daemonset)
    assert broken != daemonset
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(broken)


def test_strict_mode_is_what_catches_a_misspelled_field(daemonset):
    broken = _rename(daemonset, "spec.template.spec.hostNetwork", "hostNetwrok")
    assert kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=False) == KUBERNETES_VERSION


# ---- the DaemonSet: what the agent needs -------------------------------------------------------

def test_host_network(pod):
    assert pod["hostNetwork"] is True
    assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"


def test_capabilities_are_exactly_what_the_agent_uses(container):
    sc = container["securityContext"]
    assert sc["privileged"] is False
    assert sc["runAsUser"] == 0
    assert sc["capabilities"]["drop"] == ["ALL"]
    add = sc["capabilities"]["add"]
    assert sorted(add) == sorted(CAPABILITIES)   # exactly these, once each, no CAP_ prefix
    assert sc["readOnlyRootFilesystem"] is True
    # The API refuses allowPrivilegeEscalation false with CAP_SYS_ADMIN added (matching only
    # that spelling), and documents it as always true for a container holding CAP_SYS_ADMIN.
    assert sc.get("allowPrivilegeEscalation") is not False


def test_service_account_gets_no_token(pod):
    account = _one("ServiceAccount")
    assert account["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    assert pod.get("automountServiceAccountToken") is not True


def test_config_is_the_configmap_directory_without_subpath(pod, container, args):
    volumes = {v["name"]: v for v in pod["volumes"]}
    config = [name for name, v in volumes.items() if "configMap" in v]
    assert len(config) == 1
    assert volumes[config[0]]["configMap"]["name"] == _one("ConfigMap")["metadata"]["name"]
    mounts = [m for m in container["volumeMounts"] if m["name"] == config[0]]
    assert len(mounts) == 1
    # A subPath mount never sees the ConfigMap's updates.
    assert "subPath" not in mounts[0] and "subPathExpr" not in mounts[0]
    assert mounts[0]["mountPath"] == args["--config-dir"]
    assert mounts[0]["readOnly"] is True


def test_host_mounts(pod, container):
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    for path in ("/sys/fs/bpf", "/run/xdpkit"):
        host = volumes[mounts[path]["name"]]["hostPath"]
        assert host == {"path": path, "type": "DirectoryOrCreate"}
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
    for m in container["volumeMounts"]:
        # Bidirectional needs a privileged container.
        assert m.get("mountPropagation", "None") in ("None", "HostToContainer")
        assert "subPath" not in m


def test_probes_on_the_metrics_port(container, metrics_port):
    def port(probe):
        p = probe["httpGet"]["port"]
        return metrics_port if p == "metrics" else p
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    startup = container["startupProbe"]
    assert startup["httpGet"]["path"] == "/healthz"
    # A large rule set's first load must not be killed: minutes, not the default 30 s.
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120
    for kind in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert port(container[kind]) == metrics_port


def test_every_node(pod, daemonset):
    assert {"operator": "Exists"} in pod["tolerations"]
    assert pod["priorityClassName"] == "system-node-critical"
    assert pod["terminationGracePeriodSeconds"] == 30
    strategy = daemonset["spec"]["updateStrategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"]["maxUnavailable"] == 1


def test_selectors_match_the_pods(daemonset):
    labels = daemonset["spec"]["template"]["metadata"]["labels"]
    assert daemonset["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert _one("Service")["spec"]["selector"].items() <= labels.items()


def test_args_env_and_image(container, args):
    assert container["args"] == ["--config-dir", "/etc/xdpkit", "--listen", "0.0.0.0:9435",
                                 "--interval", "30"]
    assert int(args["--interval"]) > 0
    env = {e["name"]: e for e in container["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert container["image"] == "ghcr.io/xdpkit/xdpkit:0.1.0"


def test_resources(container):
    res = container["resources"]
    assert res["requests"] == {"cpu": "50m", "memory": "128Mi"}
    assert res["limits"] == {"memory": "512Mi"}   # no CPU limit: throttling delays reconciles


def test_one_port_everywhere(container, args, metrics_port):
    host, _, port = args["--listen"].rpartition(":")
    # Probes come from the kubelet to the node's address: the agent must not listen on loopback only.
    assert host == "0.0.0.0"
    assert int(port) == metrics_port
    service = _one("Service")
    assert service["spec"]["clusterIP"] == "None"
    (sport,) = service["spec"]["ports"]
    assert sport["name"] == "metrics" and sport["port"] == metrics_port
    assert sport["targetPort"] in ("metrics", metrics_port)


@pytest.mark.parametrize("where", ["service", "pod"])
def test_scrape_annotations(daemonset, metrics_port, where):
    annotations = (_one("Service")["metadata"] if where == "service"
                   else daemonset["spec"]["template"]["metadata"])["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(metrics_port)
    assert annotations["prometheus.io/path"] == "/metrics"


# ---- the example config --------------------------------------------------------------------------

def test_config_names_only_its_own_files(config_data):
    config = tomllib.loads(config_data["xdpkit.toml"])
    assert config["version"] == 1
    named = [app["rules"] for app in config.get("firewall", [])] + \
            [app["config"] for app in config.get("lb", [])]
    # Names in the same directory (the ConfigMap's keys), and every other key is used.
    assert all("/" not in name for name in named)
    assert set(named) == set(config_data) - {"xdpkit.toml"}
    for section in ("firewall", "lb", "decap", "stats"):
        for app in config.get(section, []):
            assert isinstance(app["interfaces"], list)
            assert app.get("mode", "auto") in ("auto", "native", "generic")


def _documentation_only(addresses):
    for text in addresses:
        net = ipaddress.ip_network(text, strict=False)
        assert any(net.version == d.version and net.subnet_of(d) for d in DOC_NETS), text


def test_lb_config_parses(config_data):
    cfg = parse_lb_config(config_data["lb.toml"], source="lb.toml")
    assert cfg.vips
    _documentation_only([cfg.encap_source_v4, cfg.encap_source_v6]
                        + [v.address for v in cfg.vips]
                        + [b.address for v in cfg.vips for b in v.backends])


def test_firewall_rules_parse(config_data):
    rules = parse_firewall_rules(config_data["firewall.rules"], source="firewall.rules")
    assert rules.rules and rules.policy == "allow"   # an example must not cut a node off
    prefixes = [p for r in rules.rules for p in (r.src or ()) + (r.dst or ())]
    assert prefixes
    _documentation_only(
        str(ipaddress.ip_network((addr, plen))) if version == 4 else str(ipaddress.IPv6Network((addr, plen)))
        for version, addr, plen in prefixes)


# ---- the image ---------------------------------------------------------------------------------

def _instructions() -> list[tuple[int, str, str]]:
    """(stage, INSTRUCTION, arguments) of the Containerfile, continuations joined."""
    out, stage, pending = [], -1, ""
    for raw in CONTAINERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue   # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        instruction, _, rest = (pending + line).partition(" ")
        pending = ""
        if instruction.upper() == "FROM":
            stage += 1
        out.append((stage, instruction.upper(), rest.strip()))
    return out


def _apt_packages(stage: int) -> set[str]:
    packages = set()
    for s, instruction, rest in _instructions():
        if s == stage and instruction == "RUN":
            for command in rest.split("&&"):
                words = shlex.split(command)
                if "apt-get" in words and "install" in words:
                    packages |= {w for w in words[words.index("install") + 1:] if not w.startswith("-")}
    return packages


def _ignored(relpath: str) -> bool:
    patterns = [line.strip() for line in (ROOT / ".containerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    parts = relpath.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    return any(fnmatch.fnmatch(prefix, pat) or fnmatch.fnmatch(prefix, pat.removeprefix("**/"))
               or fnmatch.fnmatch(prefix.rsplit("/", 1)[-1], pat.removeprefix("**/"))
               for pat in patterns for prefix in prefixes)


def test_containerfile_stages_are_debian_12():
    froms = [rest.split() for _, instruction, rest in _instructions() if instruction == "FROM"]
    assert len(froms) == 2
    assert froms[0][0].removeprefix("docker.io/library/") == "debian:12" and froms[0][1:] == ["AS", "build"]
    assert froms[-1][0].removeprefix("docker.io/library/") == "debian:12-slim"


def test_containerfile_copies_only_what_the_context_has():
    sources = []
    for _, instruction, rest in _instructions():
        if instruction in ("COPY", "ADD"):
            words = rest.split()
            if any(w.startswith("--from") for w in words):
                continue
            sources += [w.rstrip("/") for w in words[:-1] if not w.startswith("--")]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), source
        assert not _ignored(source), source


def test_runtime_has_no_compiler_and_runs_the_agent():
    build, runtime = _apt_packages(0), _apt_packages(1)
    assert {"clang", "libbpf-dev", "linux-libc-dev"} <= build   # the wheel's BPF objects
    assert {"python3", "python3-venv", "libbpf1"} <= runtime
    assert not {p for p in runtime if p.startswith(("clang", "llvm", "gcc", "lib")) and p != "libbpf1"}
    assert "ca-certificates" not in runtime
    (entrypoint,) = [rest for stage, instruction, rest in _instructions() if instruction == "ENTRYPOINT"]
    argv = json.loads(entrypoint)
    assert argv == ["/opt/xdpkit/bin/xdpkit", "agent"]
    # The entry point is the virtualenv's script, made by the install in the runtime stage.
    assert any(stage == 1 and instruction == "RUN" and "/opt/xdpkit" in rest
               for stage, instruction, rest in _instructions())


def test_context_ignores_local_state():
    assert (ROOT / ".dockerignore").read_text() == (ROOT / ".containerignore").read_text()
    for path in (".venv", ".git", "bench/results", "src/xdpkit/__pycache__", "src/xdpkit/apps/lb/lb.bpf.o"):
        assert _ignored(path), path
    for path in ("src", "src/xdpkit/apps/lb/lb.bpf.c", "pyproject.toml"):
        assert not _ignored(path), path
