"""The build step that ships conf/, prompts/, data/ and launch/ (and README.md with docs/) inside the wheel.

They stay at the repository root, where a checkout uses them; a wheel has no repository root, so
build_py copies each into the built package as rest_loop/<name>, where rest_loop/resources.py
looks first (and `rest-loop --help` points at rest_loop/README.md). Everything else about the
package is in pyproject.toml.

    pip wheel . --no-deps          # rest_loop-*.whl with rest_loop/conf/config.yaml inside
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

FOLDERS = ("conf", "prompts", "data", "launch")  # rest_loop/resources.py FOLDERS: keep the two alike
DOCS = ("README.md", "docs")  # what --help names, beside the configs


class BuildWithConfigs(build_py):
    def run(self):
        super().run()
        if self.editable_mode:  # an editable install reads them where they are
            return
        here, package = Path(__file__).parent, Path(self.build_lib) / "rest_loop"
        for name in FOLDERS + DOCS:
            if (here / name).is_dir():
                shutil.copytree(here / name, package / name, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*"))
            elif (here / name).is_file():
                shutil.copy2(here / name, package / name)


setup(cmdclass={"build_py": BuildWithConfigs})
