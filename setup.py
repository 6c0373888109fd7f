"""Wheel builds compile the built-in BPF programs, so the wheel runs them without clang."""
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyWithBpfObjects(build_py):
    def run(self):
        sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))
        from xdpkit.builtin import build_all  # needs clang, not cffi: xdpkit imports lazily
        build_all(only_stale=True)
        super().run()


setup(cmdclass={"build_py": BuildPyWithBpfObjects})
