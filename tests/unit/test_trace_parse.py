"""The trace_pipe line parser: ftrace text format, with and without optional columns."""
from xdpkit.observe.trace import TraceLine, parse_line


def test_bpf_printk_line():
    raw = "            ping-1234    [001] d.s21  1234.567890: bpf_trace_printk: hello world"
    t = parse_line(raw)
    assert (t.task, t.pid, t.cpu) == ("ping", 1234, 1)
    assert t.timestamp == 1234.567890
    assert t.message == "hello world"
    assert t.function == "bpf_trace_printk"
    assert t.raw == raw


def test_task_with_dashes_spaces_and_idle():
    t = parse_line("  kworker/u4:2-my worker-77 [000] ..... 10.000001: bpf_trace_printk: x=1")
    assert (t.task, t.pid, t.cpu, t.message) == ("kworker/u4:2-my worker", 77, 0, "x=1")
    t = parse_line("          <idle>-0       [003] ..s2. 99.5: bpf_trace_printk: pkt len 64")
    assert (t.task, t.pid, t.cpu, t.message) == ("<idle>", 0, 3, "pkt len 64")


def test_tgid_column_and_no_flags():
    t = parse_line("     python3-555   (  550) [002] d..1. 5.25: bpf_trace_printk: a: b: c")
    assert (t.task, t.pid, t.cpu, t.timestamp) == ("python3", 555, 2, 5.25)
    assert t.message == "a: b: c"  # colons in the message survive
    t = parse_line("  sshd-9 [001] 42.000100: bpf_trace_printk: no irq-info column")
    assert (t.task, t.pid, t.message) == ("sshd", 9, "no irq-info column")


def test_other_events_and_old_marker():
    t = parse_line("  ksoftirqd/0-14 [000] ..s1. 7.1: xdp_exception: prog_id=3 action=ABORTED ifindex=2")
    assert t.function == "xdp_exception"
    assert t.message == "prog_id=3 action=ABORTED ifindex=2"
    t = parse_line("  ping-8 [000] d.s2 8.0: 0: old kernel format")
    assert t.message == "old kernel format"


def test_garbage_never_raises():
    for raw in ["", "   ", "CPU:1 [LOST 12 EVENTS]", "no structure here", "x-1 [zz] 1.0: y"]:
        t = parse_line(raw)
        assert isinstance(t, TraceLine)
        assert t.raw == raw
    assert parse_line("CPU:1 [LOST 12 EVENTS]").message == "CPU:1 [LOST 12 EVENTS]"


def test_to_dict():
    d = parse_line("  a-1 [000] .... 1.5: bpf_trace_printk: hi\n").to_dict()
    assert d["task"] == "a" and d["pid"] == 1 and d["cpu"] == 0 and d["timestamp"] == 1.5
    assert d["message"] == "hi" and not d["raw"].endswith("\n")
