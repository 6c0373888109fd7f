"""A fleet on one machine: one `xdpkit agent` process per lab namespace (a "node"), reading a
config directory laid out and updated the way kubelet does a ConfigMap volume. For the fleet
tests and the agent benchmark; the agent runs as a process, as on a node, not imported."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

from xdpkit import netns as xns
from xdpkit.errors import LabError


class ConfigMapDir:
    """A directory updated like kubelet's atomic writer: the files live in a hidden timestamped
    directory, ``..data`` points at it, and each visible name is a symlink through ``..data``.
    An update writes a new hidden directory and renames a new ``..data`` over the old one."""

    def __init__(self, path, files: dict[str, str]):
        self.path = str(path)
        os.makedirs(self.path, exist_ok=True)
        self._n = 0
        self.update(files)

    def update(self, files: dict[str, str]) -> None:
        self._n += 1
        stamp = f"..2026_12_03_00_00_00.{os.getpid()}{self._n:04d}"
        new = os.path.join(self.path, stamp)
        os.mkdir(new)
        for name, text in files.items():
            with open(os.path.join(new, name), "w") as f:
                f.write(text)
        data = os.path.join(self.path, "..data")
        old = os.readlink(data) if os.path.islink(data) else None
        tmp = os.path.join(self.path, "..data_tmp")
        os.symlink(stamp, tmp)
        os.rename(tmp, data)
        for name in files:
            link = os.path.join(self.path, name)
            if not os.path.islink(link):
                os.symlink(os.path.join("..data", name), link)
        for name in os.listdir(self.path):
            if not name.startswith("..") and name not in files:
                os.unlink(os.path.join(self.path, name))
        if old is not None:
            shutil.rmtree(os.path.join(self.path, old))


class AgentProcess:
    """``xdpkit agent`` in namespace ``ns``, its JSON log in ``log_path``; ``get``/``readyz``/
    ``metric`` ask its endpoints from inside the namespace; ``events`` reads its log."""

    def __init__(self, ns: str, config_dir, state_dir, log_path, *, interval: float = 1.0, port: int = 9435,
                 extra: tuple = ()):
        self.ns, self.port = ns, port
        self.log_path = str(log_path)
        self.argv = ["ip", "netns", "exec", ns, sys.executable, "-m", "xdpkit", "agent",
                     "--config-dir", str(config_dir), "--state-dir", str(state_dir),
                     "--listen", f"127.0.0.1:{port}", "--interval", str(interval), "--node", ns, *extra]
        self.proc: subprocess.Popen | None = None

    def start(self) -> "AgentProcess":
        log = open(self.log_path, "a")
        try:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT)
        finally:
            log.close()
        return self

    def get(self, path: str, timeout: float = 2.0) -> tuple[int, str]:
        with xns.inside(self.ns):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=timeout) as r:
                    return r.status, r.read().decode()
            except urllib.error.HTTPError as exc:
                return exc.code, exc.read().decode()

    def readyz(self) -> tuple[int, dict]:
        code, body = self.get("/readyz")
        return code, json.loads(body)

    def wait_until(self, predicate, timeout: float = 20.0, what: str = "the agent"):
        """Poll ``predicate(self)`` until it returns something true; that value."""
        end = time.monotonic() + timeout
        last = None
        while time.monotonic() < end:
            if self.proc is not None and self.proc.poll() is not None:
                raise LabError(f"agent in {self.ns} exited with {self.proc.returncode}:\n{self.log()}")
            try:
                last = predicate(self)
                if last:
                    return last
            except (OSError, ValueError):
                pass  # not listening yet
            time.sleep(0.05)
        raise LabError(f"{what} in {self.ns}: not within {timeout} s (last: {last!r})\n{self.log()[-3000:]}")

    def wait_readyz(self, holds, timeout: float = 20.0, what: str = "/readyz") -> tuple[int, dict]:
        """Poll /readyz until ``holds(code, body)``; (code, body) then."""
        def answer(a):
            code, body = a.readyz()
            return (code, body) if holds(code, body) else None
        return self.wait_until(answer, timeout, what)

    def wait_ready(self, timeout: float = 20.0) -> dict:
        return self.wait_readyz(lambda code, _body: code == 200, timeout, "ready")[1]

    def metric(self, name: str) -> float | None:
        _, text = self.get("/metrics")
        for line in text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
        return None

    def log(self) -> str:
        with open(self.log_path) as f:
            return f.read()

    def events(self, kind: str | None = None) -> list[dict]:
        out = []
        for line in self.log().splitlines():
            try:
                e = json.loads(line)
            except ValueError:
                raise LabError(f"a log line that is not JSON: {line!r}") from None
            if kind is None or e.get("event") == kind:
                out.append(e)
        return out

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, and the exit status."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise LabError(f"agent in {self.ns} did not stop on SIGTERM within {timeout} s") from None
