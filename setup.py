"""The build's one addition to pyproject.toml: the wheel carries ``configs/`` (the top-level
folder, the configs' one source) inside the package as ``imgcls/configs/``, where
``imgcls.shipped`` finds them in an installed package. A checkout and an editable install
read the top-level folder itself."""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

CONFIGS = Path(__file__).resolve().parent / "configs"


class BuildPyWithConfigs(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:  # the editable install reads configs/ in place
            return
        target = Path(self.build_lib) / "imgcls" / "configs"
        for src in sorted(CONFIGS.rglob("*.yaml")):
            dst = target / src.relative_to(CONFIGS)
            self.mkpath(str(dst.parent))
            self.copy_file(str(src), str(dst))


setup(cmdclass={"build_py": BuildPyWithConfigs})
