"""A virtual lab for the L4 load balancer: a client, a router, the LB node and N backends.

    {name}-cli eth0 198.18.10.2  ─── cli0 198.18.10.1  ┐
    {name}-lb  eth0 198.18.11.2  ─── lb0  198.18.11.1  ├ {name}-rtr (forwards IPv4 and IPv6)
    {name}-beI eth0 198.18.<n>.2 ─── beI  198.18.<n>.1 ┘ (backend I = 1..N on net n = 20+I)

Every link is its own /24 and /64 (2001:db8:<net>::) with the router at .1/::1. The router sends
the VIP networks (198.18.200.0/24, 2001:db8:200::/64) to the LB node; the others route
198.18.0.0/15 and 2001:db8::/32 through the router. Backends carry both VIPs on ``lo``: once the
LB encapsulates a packet to a backend and a decapsulation program strips it there, the backend
answers the client itself (direct server return); the reply goes back through the router, never
via the LB.

Building blocks, naming rules and the MAC scheme (02:58:44:00:<net>:<host>) come from
:mod:`xdpkit.lab`; as there, every netlink call runs with the thread inside a lab namespace.
"""
from __future__ import annotations

import contextlib
import ipaddress
import socket
import subprocess
import threading

from xdpkit import interfaces, netns
from xdpkit.builtin import builtin_object
from xdpkit.errors import ConfigError, LabError
from xdpkit.object import Object
from xdpkit.lab.topology import (_NAME_RE, Lab, _mac, _write, add_veth, build_or_remove, lo_up,
                                 remove_namespaces)

VIP4 = "198.18.200.1"
VIP6 = "2001:db8:200::1"
VIP_NET4 = "198.18.200.0/24"
VIP_NET6 = "2001:db8:200::/64"
MAX_BACKENDS = 32  # nets 21..52: clear of the VIP net (200) and the encap-source net (99)
JOIN_TIMEOUT = 2.0


MAX_NODES = 9     # LB nodes lb, lb2..lb9 on nets 11 and 62..69


def _net(role: str) -> int:
    if role.startswith("lb") and role != "lb":
        return 60 + int(role[2:])
    return {"cli": 10, "lb": 11}.get(role) or 20 + int(role[2:])


class LbLab:
    """Namespaces ``{name}-cli``, ``{name}-rtr``, ``{name}-lb`` and ``{name}-be1``..``-beN``.

    ``nodes`` > 1 adds more load-balancer nodes ``{name}-lb2``.. (a fleet sharing one config);
    the router sends the VIPs to one of them at a time (``route_vips_to``)."""

    def __init__(self, name: str = "xlb", backends: int = 3, *, nodes: int = 1):
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ConfigError(f"invalid lab name {name!r}: use 1-8 characters from a-z, 0-9 and '-', "
                              "not starting with '-'", field="name")
        if not isinstance(backends, int) or not 1 <= backends <= MAX_BACKENDS:
            raise ConfigError(f"backends must be 1..{MAX_BACKENDS}, not {backends!r}", field="backends")
        if not isinstance(nodes, int) or not 1 <= nodes <= MAX_NODES:
            raise ConfigError(f"nodes must be 1..{MAX_NODES}, not {nodes!r}", field="nodes")
        self.name, self.backends, self.nodes = name, backends, nodes
        self._servers: list[BackendServers] = []

    def __enter__(self) -> LbLab:
        self.up()
        return self

    def __exit__(self, *exc) -> None:
        self.down()

    # ---- names and addresses ----
    @property
    def roles(self) -> list[str]:
        return ["cli", "rtr"] + self.lb_nodes + [f"be{i}" for i in range(1, self.backends + 1)]

    @property
    def lb_nodes(self) -> list[str]:
        """The load-balancer nodes' roles: lb, then lb2..lbN."""
        return ["lb"] + [f"lb{i}" for i in range(2, self.nodes + 1)]

    @property
    def namespaces(self) -> list[str]:
        return [f"{self.name}-{r}" for r in self.roles]

    def ns(self, role: str) -> str:
        """Namespace of a role ("cli", "rtr", "lb", "be1"...); a lab namespace name passes through."""
        if role in self.roles:
            return f"{self.name}-{role}"
        if role in self.namespaces:
            return role
        raise ConfigError(f"unknown role {role!r}; use one of {', '.join(self.roles)}", field="role")

    def _endpoint(self, role: str) -> str:
        if role in self.roles and role != "rtr":
            return role
        raise ConfigError(f"{role!r} is not an endpoint; use cli, {', '.join(self.lb_nodes)} or be1..be{self.backends}",
                          field="role")

    def address(self, role: str, family: int = 4, *, router: bool = False) -> str:
        """eth0 address of an endpoint, or with ``router=True`` the router's address on its link."""
        net, host = _net(self._endpoint(role)), 1 if router else 2
        if family == 4:
            return f"198.18.{net}.{host}"
        if family == 6:  # the net in decimal digits, like xdpkit.lab's 2001:db8:1::
            return f"2001:db8:{net}::{host}"
        raise ConfigError(f"family must be 4 or 6, not {family!r}", field="family")

    def mac(self, role: str, *, router: bool = False) -> str:
        """eth0 MAC of an endpoint, or the router's MAC on its link (the LB's next hop: router=True)."""
        return _mac(_net(self._endpoint(role)), 1 if router else 2)

    def router_ifname(self, role: str) -> str:
        """The router's interface towards an endpoint: cli0, lb0, be1..beN."""
        role = self._endpoint(role)
        return role if role.startswith("be") else f"{role}0"

    def backend_addresses(self, family: int = 4) -> list[str]:
        return [self.address(f"be{i}", family) for i in range(1, self.backends + 1)]

    def lb_config(self, weights=None, *, seed: int = 0, table_size: int = 0, health: str = "") -> str:
        """A load balancer config (TOML) for this lab: VIP4 tcp/80 over every backend, with
        ``weights`` (default 1 each), outer sources from 198.18.99.0/24; ``health`` is an inline
        table's text such as '{ kind = "http", interval = 0.2 }'."""
        weights = weights or (1,) * self.backends
        backends = ", ".join(f'{{ address = "{a}", weight = {w} }}' for a, w in zip(self.backend_addresses(4), weights))
        return "\n".join([f"seed = {seed}", 'encap_source_v4 = "198.18.99.0/24"', "", "[[vip]]",
                          f'address = "{VIP4}"', 'protocol = "tcp"', "port = 80",
                          *([f"table_size = {table_size}"] if table_size else []),
                          *([f"health = {health}"] if health else []), f"backends = [{backends}]", ""])

    # ---- lifecycle ----
    def exists(self) -> bool:
        """True if any of the lab's namespaces exists (a half-built lab exists too)."""
        return any(netns.exists(n) for n in self.namespaces)

    def up(self) -> dict:
        """Build the lab. It must not exist yet; on failure whatever was made is removed again."""
        there = [n for n in self.namespaces if netns.exists(n)]
        if there:
            raise LabError(f"load-balancer lab {self.name!r} already exists ({', '.join(there)})",
                           hint="tear it down first (LbLab(name).down()) or pick another name")
        build_or_remove(self._build, self.down, f"load-balancer lab {self.name}")
        return {"name": self.name, "action": "created", "namespaces": self.namespaces,
                "vip4": VIP4, "vip6": VIP6, "backends": self.backend_addresses(4)}

    def down(self) -> list[str]:
        """Stop servers started here and remove the namespaces (idempotent). Returns names removed."""
        while self._servers:
            self._servers.pop().close()  # open sockets would keep a removed namespace alive
        return remove_namespaces(self.namespaces)

    def _build(self) -> None:
        rtr = self.ns("rtr")
        for role in self.roles:
            netns.create(self.ns(role))
            with netns.inside(self.ns(role)):
                lo_up()
                for conf in ("all", "default"):
                    # DSR is asymmetric: the router gets replies sourced from the VIP on beI while
                    # its route to the VIP is lb0, and a backend decapsulating on another device
                    # gets client-sourced packets there. Set before the veths exist, so they
                    # inherit 0 from "default" (and set per interface below as well).
                    _write(f"/proc/sys/net/ipv4/conf/{conf}/rp_filter", "0")
                    # Addresses carry IFA_F_NODAD too; this covers link-local ones, so neighbour
                    # discovery works the moment the links are up.
                    _write(f"/proc/sys/net/ipv6/conf/{conf}/accept_dad", "0")
                    if role.startswith("be"):
                        # The VIPs on lo must not be answered or announced in ARP on eth0 (the
                        # usual DSR hygiene; here the router never asks, but a copied setup might).
                        _write(f"/proc/sys/net/ipv4/conf/{conf}/arp_ignore", "1")
                        _write(f"/proc/sys/net/ipv4/conf/{conf}/arp_announce", "2")
        with netns.inside(rtr):
            _write("/proc/sys/net/ipv4/ip_forward", "1")
            _write("/proc/sys/net/ipv6/conf/all/forwarding", "1")
        for role in (r for r in self.roles if r != "rtr"):
            rif = self.router_ifname(role)
            with netns.inside(self.ns(role)):
                # GRO on both ends (add_veth's default): a veth drops XDP_TX/redirected frames
                # unless its peer has XDP or GRO, and the LB sends with XDP_TX out of eth0.
                add_veth("eth0", rif, peer_ns=rtr, mac_a=self.mac(role), mac_b=self.mac(role, router=True))
                self._configure("eth0", self.address(role, 4), self.address(role, 6))
                if role == "cli":
                    # The LB forwards the client's packets as xdp_frames, which lose a veth's
                    # CHECKSUM_PARTIAL state: let the client's stack write full checksums.
                    interfaces.set_tx_checksum("eth0", False)
                interfaces.add_route("198.18.0.0/15", self.address(role, 4, router=True))
                interfaces.add_route("2001:db8::/32", self.address(role, 6, router=True))
                if role.startswith("be"):
                    interfaces.add_address("lo", f"{VIP4}/32")
                    interfaces.add_address("lo", f"{VIP6}/128", nodad=True)
            with netns.inside(rtr):
                self._configure(rif, self.address(role, 4, router=True), self.address(role, 6, router=True))
        with netns.inside(rtr):
            interfaces.add_route(VIP_NET4, self.address("lb", 4))
            interfaces.add_route(VIP_NET6, self.address("lb", 6))
        with netns.inside(rtr):
            # XDP_TX frames from the LB reach lb0's ring, but the kernel wakes the peer's NAPI
            # after XDP_TX only when the peer has an XDP program (veth_xdp_flush); with GRO
            # alone they sit there. A pass-through program on lb0 makes it a plain router port.
            with Object.from_file(builtin_object("receivers"), program="xdpkit_pass") as obj:
                for node in self.lb_nodes:
                    obj.programs["xdpkit_pass"].attach(self.router_ifname(node), mode="native", netlink=True)

    @staticmethod
    def _configure(ifname: str, ip4: str, ip6: str) -> None:
        """/24 and /64 (no DAD) on ``ifname`` in this thread's namespace; rp_filter off on it too."""
        _write(f"/proc/sys/net/ipv4/conf/{ifname}/rp_filter", "0")
        interfaces.add_address(ifname, f"{ip4}/24")
        interfaces.add_address(ifname, f"{ip6}/64", nodad=True)

    def route_vips_to(self, node: str) -> None:
        """Send the VIP networks to load-balancer node ``node`` (lb, lb2, ...) from now on."""
        if node not in self.lb_nodes:
            raise ConfigError(f"{node!r} is not a load-balancer node; use one of {', '.join(self.lb_nodes)}",
                              field="node")
        for net, family in ((VIP_NET4, 4), (VIP_NET6, 6)):
            self.run("rtr", ["ip", f"-{family}", "route", "replace", net, "via", self.address(node, family)],
                     check=True)

    # ---- doing things in it ----
    def run(self, role: str, argv: list[str], timeout: float = 10.0, *,
            check: bool = False) -> subprocess.CompletedProcess:
        """Run ``argv`` in a lab namespace through ``ip netns exec`` (text output captured)."""
        return Lab.run(self, role, argv, timeout=timeout, check=check)  # it only needs self.ns()

    def start_servers(self, port: int = 80, **kw) -> BackendServers:
        """Start a :class:`BackendServers` on every backend; ``down()`` stops it if you do not."""
        servers = BackendServers(self, port, **kw)
        self._servers.append(servers)
        return servers

    def _client_socket(self, address: str, port: int, timeout: float, sport: int) -> socket.socket:
        family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
        with netns.inside(self.ns("cli")):
            s = socket.socket(family, socket.SOCK_STREAM)  # a socket lives in the namespace it was made in
        try:
            s.settimeout(timeout)
            if sport:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("", sport))
            s.connect((address, port))
        except BaseException:
            s.close()
            raise
        return s

    def client_get(self, address: str, port: int = 80, timeout: float = 2.0, *, path: str = "/",
                   sport: int = 0) -> str:
        """HTTP GET from the client namespace; the body, stripped (e.g. "be2").

        Socket errors (refused, timeout) propagate as OSError; a non-200 answer is a LabError.
        ``sport`` pins the source port (to choose a flow); 0 lets the kernel pick.
        """
        with self._client_socket(address, port, timeout, sport) as s:
            host = f"[{address}]" if ":" in address else address
            s.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
            data = b""
            while len(data) < 65536 and (chunk := s.recv(4096)):
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0].decode(errors="replace")
        if status.split()[1:2] != ["200"]:
            raise LabError(f"GET http://{address}:{port}{path} from the client: {status or 'no answer'}")
        return body.decode(errors="replace").strip()

    def client_hold(self, address: str, port: int = 80, timeout: float = 2.0, *,
                    sport: int = 0) -> HoldConnection:
        """A long-lived connection from the client: ``.ping()`` names the backend serving it."""
        return HoldConnection(self._client_socket(address, port, timeout, sport))


class _Closing:
    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class HoldConnection(_Closing):
    """One TCP connection in "hold" mode: each ``ping()`` returns the serving backend's name."""

    def __init__(self, sock: socket.socket):
        self._sock, self._lines = sock, _lines(sock)
        try:
            sock.sendall(b"HOLD\n")
        except BaseException:
            sock.close()
            raise

    def ping(self) -> str:
        self._sock.sendall(b"ping\n")
        line = next(self._lines, None)
        if line is None:
            raise ConnectionResetError("the backend closed the held connection")
        return line.decode(errors="replace").strip()

    def close(self) -> None:
        self._sock.close()


def _lines(conn: socket.socket):
    """Lines from ``conn`` without their line ending; stops at EOF or at an overlong line."""
    buf = b""
    while True:
        while b"\n" not in buf:
            chunk = conn.recv(4096)
            if not chunk or len(buf) > 8192:
                return
            buf += chunk
        line, buf = buf.split(b"\n", 1)
        yield line.rstrip(b"\r")


class _Backend:
    """One backend's server: a listener that can be closed and reopened, and its connections."""

    def __init__(self, ns: str, name: str, port: int, idle: float):
        self.ns, self.name, self.port, self.idle = ns, name, port, idle
        self.reply = f"{name}\n".encode()
        self.lock = threading.Lock()
        self.conns: dict[socket.socket, threading.Thread] = {}
        self.listener: socket.socket | None = None
        self.acceptor: threading.Thread | None = None

    def listen(self) -> None:
        if self.listener is not None:
            return
        with netns.inside(self.ns):  # the listener must belong to the backend's namespace
            # SO_REUSEADDR (set by create_server) lets start() rebind despite TIME_WAIT leftovers;
            # dual stack (IPV6_V6ONLY=0): one socket serves the v4 and the v6 address and VIP.
            s = socket.create_server(("::", self.port), family=socket.AF_INET6, backlog=128,
                                     dualstack_ipv6=True)
        self.listener = s
        self.acceptor = threading.Thread(target=self._accept, args=(s,), daemon=True,
                                         name=f"lb-lab-{self.ns}-accept")
        self.acceptor.start()

    def unlisten(self, drop: bool = False) -> None:
        s, t, self.listener, self.acceptor = self.listener, self.acceptor, None, None
        if s is not None:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)  # wakes accept() (EINVAL); new connects get refused
            t.join(JOIN_TIMEOUT)
            s.close()
        if drop:
            with self.lock:  # handlers close their socket under this lock: no shutdown of a reused fd
                conns = list(self.conns.values())
                for c in self.conns:
                    with contextlib.suppress(OSError):
                        c.shutdown(socket.SHUT_RDWR)
            for th in conns:
                th.join(JOIN_TIMEOUT)

    def _accept(self, s: socket.socket) -> None:
        while True:
            try:
                conn, _peer = s.accept()
            except OSError:
                return
            conn.settimeout(self.idle)  # a forgotten client cannot pin a thread forever
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True, name=f"lb-lab-{self.ns}-conn")
            with self.lock:
                self.conns[conn] = t
            t.start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            lines = _lines(conn)
            first = next(lines, None)
            if first == b"HOLD":
                for line in lines:
                    if line == b"ping":
                        conn.sendall(self.reply)
            elif first:
                method, path, version = (first.split() + [b"", b"", b""])[:3]
                for line in lines:  # headers, up to the empty line
                    if not line:
                        break
                ok = method in (b"GET", b"HEAD") and path == b"/"
                body = self.reply if ok else b"not found\n"
                head = (f"{'HTTP/1.1' if version == b'HTTP/1.1' else 'HTTP/1.0'} "
                        f"{'200 OK' if ok else '404 Not Found'}\r\nContent-Type: text/plain\r\n"
                        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
                conn.sendall(head.encode() + (body if method != b"HEAD" else b""))
        except OSError:
            pass  # timeouts, resets, shutdown by close(): the connection just ends
        finally:
            with self.lock:
                self.conns.pop(conn, None)
                conn.close()


class BackendServers(_Closing):
    """A tiny HTTP server in every backend namespace, listening on [::]:port (v4 and v6).

    ``GET /`` answers 200 with body ``be{i}\\n`` and ``Connection: close``. A first line ``HOLD``
    keeps the connection open and answers each further ``ping`` line with ``be{i}\\n``.
    ``stop(i)`` closes backend i's listener: new connections are refused, ones not yet accepted
    are reset, accepted ones stay unless ``connections=True``. ``start(i)`` reopens it;
    ``close()`` ends everything. Idle connections are closed after ``idle_timeout`` seconds.
    """

    def __init__(self, lab: LbLab, port: int = 80, *, idle_timeout: float = 30.0):
        if not 1 <= port <= 65535:
            raise ConfigError(f"port must be 1..65535, not {port!r}", field="port")
        self.port = port
        self._backends = {i: _Backend(lab.ns(f"be{i}"), f"be{i}", port, idle_timeout)
                          for i in range(1, lab.backends + 1)}
        try:
            for i in self._backends:
                self.start(i)
        except BaseException:
            self.close()
            raise

    def _get(self, i: int) -> _Backend:
        if i not in self._backends:
            raise ConfigError(f"no backend {i!r}; use 1..{len(self._backends)}", field="backend")
        return self._backends[i]

    def start(self, i: int) -> None:
        self._get(i).listen()

    def stop(self, i: int, *, connections: bool = False) -> None:
        self._get(i).unlisten(drop=connections)

    def close(self) -> None:
        for b in self._backends.values():
            b.unlisten(drop=True)
