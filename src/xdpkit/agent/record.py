"""What the agent put on this node: interface -> (app, program id, config digest), in a file.

The data plane lives in the kernel and outlives the agent; this record is how a restarted agent
tells its own programs (adopt them as they are) from anyone else's (never touched), and which
digest of the config they were last made from (so a config change is told from drift). One file
per network namespace, written whole and renamed into place, so a kill -9 at any moment leaves
the old record or the new one.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

from xdpkit import netns
from xdpkit.errors import ConfigError, XdpkitError

DEFAULT_STATE_DIR = "/run/xdpkit/agent"


@dataclass(frozen=True)
class Owned:
    app: str
    program_id: int
    digest: str


class Record:
    def __init__(self, state_dir: str = DEFAULT_STATE_DIR):
        # checked before anything is loaded: a program the agent could not record would be
        # one it can never tell from anyone else's
        try:
            os.makedirs(state_dir, mode=0o700, exist_ok=True)
            if not os.access(state_dir, os.W_OK):
                raise PermissionError(13, "Permission denied")
        except OSError as exc:
            raise XdpkitError(f"cannot write the agent's record in {state_dir}: {exc.strerror}",
                              hint="give a writable --state-dir (on Kubernetes, the hostPath /run/xdpkit)") from None
        self.path = os.path.join(state_dir, f"netns-{netns.current_id()}.json")
        self.owned: dict[str, Owned] = {}

    def load(self) -> "Record":
        """Read the record (once this agent is the namespace's only one: single.py)."""
        self.owned = {}
        try:
            with open(self.path) as f:
                data = json.load(f)
            self.owned = {ifname: Owned(**o) for ifname, o in data["interfaces"].items()}
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"the agent's record {self.path} cannot be read ({exc})",
                              hint="move it away: the agent then adopts the apps its config names, "
                                   "and removes nothing it cannot prove it put there") from None
        return self

    def get(self, ifname: str) -> Owned | None:
        return self.owned.get(ifname)

    def set(self, ifname: str, owned: Owned) -> None:
        if self.owned.get(ifname) != owned:
            self.owned[ifname] = owned
            self._save()

    def move(self, old: str, new: str) -> None:
        """An interface of ours renamed: its entry follows (one taken over by it is dropped)."""
        self.owned[new] = self.owned.pop(old)
        self._save()

    def forget(self, ifname: str) -> None:
        if self.owned.pop(ifname, None) is not None:
            self._save()

    def _save(self) -> None:
        try:
            os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
            tmp = f"{self.path}.{os.getpid()}.tmp"
            with open(tmp, "w") as f:
                json.dump({"interfaces": {k: asdict(v) for k, v in sorted(self.owned.items())}}, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            raise XdpkitError(f"cannot write the agent's record {self.path}: {exc.strerror}",
                              hint="give a writable --state-dir") from None

    def remove(self) -> None:
        """The record of a node the agent cleaned up."""
        self.owned = {}
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
