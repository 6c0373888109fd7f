"""What the package declares is what works: the Python it needs, and `python -m xdpkit --help`."""
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_requires_python_is_what_the_code_needs():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    # tomllib (the load balancer's config) and enum.StrEnum (XdpMode) are 3.11+
    assert project["requires-python"] == ">=3.11"
    assert sys.version_info >= (3, 11)


def test_module_help_runs():
    proc = subprocess.run([sys.executable, "-m", "xdpkit", "--help"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("usage: xdpkit") and not proc.stderr
