"""Packaging hook (the project is described in pyproject.toml): a wheel carries the committed data files
that hypergen reads at run time, data/splits/*.json and data/descriptions/*.json, as hypergen/_shipped/.

They stay in data/ in the repository, where data/make_descriptions.py and `python -m hypergen.tasks.split`
write them; hypergen.paths.shipped_data finds them in either place. The zoo and generator checkpoints
(about 60 MB) are not packaged: hypergen.api says where it looks for them.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SHIPPED = ["data/splits/*.json", "data/descriptions/*.json"]


class BuildWithData(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:  # an editable install reads data/ in place
            return
        files = [f for pattern in SHIPPED for f in sorted(Path().glob(pattern))]
        if not files:
            raise SystemExit(f"setup.py: none of {SHIPPED} found; build from a checkout or an sdist of hypergen.")
        for f in files:
            dest = Path(self.build_lib, "hypergen", "_shipped", *f.parts[1:])
            self.mkpath(str(dest.parent))
            self.copy_file(str(f), str(dest))


setup(cmdclass={"build_py": BuildWithData})
