"""The agent's log: one JSON object a line on stdout (what log collectors on Kubernetes read),
or plain text for a person at a terminal."""
from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time

LOGGER = "xdpkit.agent"
QUIETER = ("xdpkit.lb.health",)   # its up/down lines: the agent logs them as events of its own


class JsonFormatter(logging.Formatter):
    def __init__(self, node: str):
        super().__init__()
        self.node = node

    def format(self, record: logging.LogRecord) -> str:
        t = time.gmtime(record.created)
        out = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{int(record.msecs):03d}Z",
               "level": record.levelname.lower(), "node": self.node, "msg": record.getMessage()}
        out.update(getattr(record, "fields", {}))
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        fields = getattr(record, "fields", {})
        extra = " ".join(f"{k}={v}" for k, v in fields.items() if k not in ("event",))
        return f"{stamp} {record.levelname.lower():7} {record.getMessage()}" + (f"  [{extra}]" if extra else "")


def setup(fmt: str, node: str | None = None, stream=None) -> logging.Logger:
    """Every xdpkit logger of the process (the apps' too) writes through one handler, so each
    line on stdout is one JSON object. ``node`` names the node in each line (default $NODE_NAME,
    else the hostname)."""
    node = node or os.environ.get("NODE_NAME") or socket.gethostname()
    top = logging.getLogger("xdpkit")
    top.handlers.clear()
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter(node) if fmt == "json" else TextFormatter())
    top.addHandler(handler)
    top.setLevel(logging.INFO)
    top.propagate = False
    for name in QUIETER:
        logging.getLogger(name).setLevel(logging.ERROR)
    return logging.getLogger(LOGGER)


def event(log: logging.Logger, level: int, msg: str, **fields) -> None:
    log.log(level, msg, extra={"fields": fields})
