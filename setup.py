"""Build step pyproject.toml cannot express: ship the top-level ``registry.toml`` in the package.

The registry file stays where the design puts it (the top of the repository); a wheel carries a
copy as ``zooadapt/registry.toml``, which ``zooadapt.host.registry`` reads when it is not running from
a checkout. (A symlink did this before and broke on checkouts without symlinks.)
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPy(build_py):
    def run(self) -> None:
        super().run()
        target = Path(self.build_lib, "zooadapt", "registry.toml")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(__file__).with_name("registry.toml"), target)


setup(cmdclass={"build_py": BuildPy})
