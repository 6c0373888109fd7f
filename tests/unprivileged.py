"""Running a command without privileges: the same user (so this checkout and the virtualenv stay
readable, wherever CI cloned them), with every capability dropped before exec (no CAP_BPF,
CAP_SYS_ADMIN, CAP_NET_ADMIN or CAP_DAC_OVERRIDE), as an ordinary user runs xdpkit."""
import os
import subprocess

WITHOUT_CAPABILITIES = ["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--no-new-privs"]
#: a home no one can write to, not even its owner (procfs refuses mkdir)
NO_HOME = "/proc/xdpkit-no-home"


def run_without_capabilities(argv: list[str], *, env: dict | None = None, timeout: float = 120,
                             cwd: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*WITHOUT_CAPABILITIES, *argv], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd, env={**os.environ, "HOME": NO_HOME, **(env or {})})
