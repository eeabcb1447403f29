"""Ships the repository's prompts/ and constitutions/ inside the wheel, as labeler/_shipped/.

The folders stay at the top of the repository, where people read and edit them; an installed
labeler finds the copies next to its modules (`labeler.core.shipped`). Everything else is in pyproject.toml.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
SHIPPED = ("prompts", "constitutions")


class BuildPyWithShippedFiles(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads the repository's own folders
        for name in SHIPPED:
            shutil.copytree(ROOT / name, Path(self.build_lib) / "labeler" / "_shipped" / name, dirs_exist_ok=True)


setup(cmdclass={"build_py": BuildPyWithShippedFiles})
