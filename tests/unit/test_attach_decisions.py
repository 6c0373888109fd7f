"""What xdpkit does on an interface, decided without a kernel: xdp.decide_attach is a pure
function of what is attached (none, xdpkit's, someone else's; by netlink or bpf_link; in which
mode), the requested mode, force and the way of attaching. No root, no libbpf calls."""
import errno as E

import pytest

from xdpkit import xdp
from xdpkit.errors import AttachError, NotFoundError
from xdpkit.xdp import Action, Attachment, MapRef, XdpMode, decide_attach, decide_detach, falls_back

N, G = XdpMode.NATIVE, XdpMode.GENERIC
BOTH = (N, G)


@pytest.fixture(autouse=True)
def no_kernel(monkeypatch):
    """Any libbpf or netlink call from a decision fails the test."""
    def refuse(*_a, **_k):
        raise AssertionError("a decision touched the kernel")

    monkeypatch.setattr(xdp, "require", refuse)
    for name in ("get_link", "list_links", "set_xdp", "ifindex_of", "ifname_of"):
        monkeypatch.setattr(xdp.nl, name, refuse)


def there(who: str, mode=N, via="netlink", prog_id=7) -> Attachment:
    return Attachment("eth1", 3, mode, prog_id, name="xdp_prog", owner="xdpkit" if who == "ours" else None,
                      link_id=11 if via == "bpf_link" else None)


# (what is there, requested mode, force, netlink) -> (action, modes, expected id, errno, in message, in hint)
ROWS = [
    # nothing there: attach, whatever force says; AUTO is native then generic
    (None, "auto", False, True, Action.ATTACH, BOTH, None, None, "", ""),
    (None, "generic", False, True, Action.ATTACH, (G,), None, None, "", ""),
    (None, "native", True, True, Action.ATTACH, (N,), None, None, "", ""),
    (None, "auto", False, False, Action.ATTACH, BOTH, None, None, "", ""),
    (None, "offload", True, False, Action.ATTACH, (XdpMode.OFFLOAD,), None, None, "", ""),
    # netlink over our own netlink program: atomic replace, in the mode already in use
    (("ours", N), "auto", False, True, Action.REPLACE, (N,), 7, None, "", ""),
    (("ours", G), "auto", False, True, Action.REPLACE, (G,), 7, None, "", ""),
    (("ours", G), "generic", False, True, Action.REPLACE, (G,), 7, None, "", ""),
    (("ours", N), "native", True, True, Action.REPLACE, (N,), 7, None, "", ""),
    # ... but native and generic never coexist: a mode change is not one step
    (("ours", N), "generic", False, True, Action.REFUSE, (), None, E.EEXIST, "in one step", "--mode native"),
    (("ours", N), "generic", True, True, Action.DETACH_FIRST, (G,), 7, None, "", ""),
    # someone else's netlink program: only with force, then atomically where possible
    (("foreign", G), "auto", False, True, Action.NEED_FORCE, (), None, E.EBUSY, "eth1 is busy: program 'xdp_prog' (id 7, generic mode, not attached by xdpkit)", "--force"),
    (("foreign", G), "auto", True, True, Action.REPLACE, (G,), 7, None, "", ""),
    (("foreign", N), "native", True, True, Action.REPLACE, (N,), 7, None, "", ""),
    (("foreign", N), "generic", False, True, Action.NEED_FORCE, (), None, E.EBUSY, "is busy", "--force"),
    (("foreign", N), "generic", True, True, Action.DETACH_FIRST, (G,), 7, None, "", ""),
    # a bpf_link is in the way of netlink: nothing replaces a link
    (("ours", N, "bpf_link"), "auto", False, True, Action.REFUSE, (), None, E.EBUSY, "attached through bpf_link 11", "xdpkit unload eth1 ("),
    (("ours", N, "bpf_link"), "auto", True, True, Action.DETACH_FIRST, BOTH, 7, None, "", ""),
    (("foreign", G, "bpf_link"), "auto", False, True, Action.NEED_FORCE, (), None, E.EBUSY, "attached through bpf_link 11", "xdpkit unload eth1 --force"),
    (("foreign", G, "bpf_link"), "native", True, True, Action.DETACH_FIRST, (N,), 7, None, "", ""),
    # the bpf_link path: a link never replaces a program, so anything there is refused or, with
    # force, detached first
    (("ours", N), "auto", False, False, Action.REFUSE, (), None, E.EBUSY, "a bpf_link cannot replace", "netlink=True"),
    (("ours", N, "bpf_link"), "native", False, False, Action.REFUSE, (), None, E.EBUSY, "a bpf_link cannot replace", "force=True"),
    (("foreign", N), "auto", False, False, Action.NEED_FORCE, (), None, E.EBUSY, "eth1 is busy", "--force"),
    (("foreign", G, "bpf_link"), "auto", False, False, Action.NEED_FORCE, (), None, E.EBUSY, "eth1 is busy", "--force"),
    (("ours", N), "auto", True, False, Action.DETACH_FIRST, BOTH, 7, None, "", ""),
    (("ours", G, "bpf_link"), "generic", True, False, Action.DETACH_FIRST, (G,), 7, None, "", ""),
    (("foreign", N), "native", True, False, Action.DETACH_FIRST, (N,), 7, None, "", ""),
    (("foreign", G, "bpf_link"), "auto", True, False, Action.DETACH_FIRST, BOTH, 7, None, "", ""),
]


def _id(row):
    cur, mode, force, netlink = row[:4]
    what = "none" if cur is None else "-".join(str(c) for c in cur)
    return f"{'netlink' if netlink else 'bpf_link'}:{what}:{mode}:{'force' if force else 'noforce'}"


@pytest.mark.parametrize("row", ROWS, ids=[_id(r) for r in ROWS])
def test_decision_table(row):
    cur, mode, force, netlink, action, modes, expected_id, errno, in_msg, in_hint = row
    current = None if cur is None else there(*cur)
    d = decide_attach(current, mode, force=force, netlink=netlink, ifname="eth1")
    assert (d.action, d.modes, d.expected_id) == (action, modes, expected_id)
    if errno is None:
        assert d.error is None and d.check() is d
    else:
        assert isinstance(d.error, AttachError) and d.error.errno == errno
        assert in_msg in str(d.error) and in_hint in (d.error.hint or "")
        with pytest.raises(AttachError):
            d.check()


def test_force_never_refuses_and_ownership_comes_first():
    """With force nothing is refused; without it a foreign program is always NEED_FORCE, before
    any question of modes or links."""
    for who in ("ours", "foreign"):
        for via in ("netlink", "bpf_link"):
            for cur_mode in (N, G):
                for mode in ("auto", "native", "generic"):
                    for netlink in (True, False):
                        current = there(who, cur_mode, via)
                        forced = decide_attach(current, mode, force=True, netlink=netlink, ifname="eth1")
                        assert forced.action in (Action.REPLACE, Action.DETACH_FIRST) and forced.error is None
                        plain = decide_attach(current, mode, force=False, netlink=netlink, ifname="eth1")
                        if who == "foreign":
                            assert plain.action == Action.NEED_FORCE
                        else:
                            assert plain.action in (Action.REPLACE, Action.REFUSE)
                        # only netlink over a netlink program in a compatible mode is atomic
                        atomic = netlink and via == "netlink" and mode in ("auto", cur_mode.value)
                        assert (forced.action == Action.REPLACE) == atomic


@pytest.mark.parametrize("modes,tried,err,expect", [
    (BOTH, N, E.EOPNOTSUPP, True),   # no native XDP in this driver
    (BOTH, N, E.EINVAL, True),
    (BOTH, N, E.ERANGE, True),       # MTU too large for native
    (BOTH, N, E.EPERM, False),       # not a mode problem
    (BOTH, N, E.EBUSY, False),
    (BOTH, G, E.EOPNOTSUPP, False),  # nothing after generic
    ((N,), N, E.EOPNOTSUPP, False),  # native was asked for (or is the mode in use): no fallback
])
def test_auto_falls_back_to_generic_only_for_mode_refusals(modes, tried, err, expect):
    assert falls_back(modes, tried, err) is expect


def test_detach_decision():
    with pytest.raises(NotFoundError, match="no XDP program attached to eth1"):
        decide_detach(None, force=False, ifname="eth1")
    ours, foreign = there("ours"), there("foreign", G)
    assert decide_detach(ours, force=False, ifname="eth1") is ours
    with pytest.raises(AttachError, match="refusing to detach") as exc:
        decide_detach(foreign, force=False, ifname="eth1")
    assert "--force" in exc.value.hint
    assert decide_detach(foreign, force=True, ifname="eth1") is foreign


@pytest.mark.parametrize("err,mode,extack,expect", [
    (E.EOPNOTSUPP, N, "", "eth1 does not support XDP in native mode"),
    (E.EINVAL, XdpMode.OFFLOAD, "", "eth1 does not support XDP in offload mode"),
    (E.ERANGE, N, "", "eth1: MTU too large for XDP in native mode"),
    (E.EINVAL, N, "MTU too large", "eth1: MTU too large"),
    (E.ENODEV, G, "", "no such interface: eth1"),
    (E.EPERM, G, "", "permission denied attaching to eth1"),
    (E.EEXIST, N, "", "eth1: the attached program changed while replacing it"),
    (E.EBUSY, N, "", "eth1 is busy: another program is attached"),
])
def test_kernel_refusals_say_why(err, mode, extack, expect):
    e = xdp._attach_error(err, "eth1", mode, extack)
    assert str(e).startswith(expect) and e.errno == err


def test_attachment_is_typed_and_prints_as_before():
    att = Attachment("eth1", 3, "generic", 7, name="fw", tag="ab" * 8, owner="xdpkit",
                     maps=[MapRef(5, "fw_rules", "hash"), MapRef(6, "xdpkit_st_etype", "percpu_array")])
    assert att.mode is XdpMode.GENERIC and att.mode == "generic" and f"{att.mode}" == "generic"
    assert att.to_dict() == {
        "ifname": "eth1", "ifindex": 3, "mode": "generic", "id": 7, "name": "fw", "tag": "ab" * 8,
        "maps": [{"id": 5, "name": "fw_rules", "type": "hash"},
                 {"id": 6, "name": "xdpkit_st_etype", "type": "percpu_array"}],
        "owner": "xdpkit", "link_id": None, "attach_type": "netlink"}
    assert att.describe() == "program 'fw' (id 7, generic mode, xdpkit)"
    m = att.maps[0]
    assert (m.id, m.name, m.type) == (5, "fw_rules", "hash")
    assert (m["id"], m["name"], m["type"], m.get("name"), m.get("nope", 0)) == (5, "fw_rules", "hash", "fw_rules", 0)
    with pytest.raises(KeyError):
        m["nope"]
    assert dict(m) == m.to_dict() and MapRef.of({"id": 5, "name": "fw_rules", "type": "hash"}) == m


def test_link_types_share_one_interface():
    for cls in (xdp.NetlinkXdpLink, xdp.BpfXdpLink):
        assert issubclass(cls, xdp.XdpLink)
        for name in ("detach", "close", "__enter__", "__exit__"):
            assert callable(getattr(cls, name))
    link = xdp.NetlinkXdpLink(3, "eth1", N, 7, note="fell back")
    assert (link.ifname, link.ifindex, link.mode, link.prog_id, link.note, link.kind) == \
        ("eth1", 3, N, 7, "fell back", "netlink")
    link.close()  # nothing to release
