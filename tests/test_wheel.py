"""The wheel installs one top-level name: `keras_attn`.

The checkout is built into a wheel (`pip wheel --no-deps
--no-build-isolation`, from a copy so that `build/` and `*.egg-info` stay
out of the checkout), installed with `--no-deps` into a fresh virtual
environment, and what it put into that environment's site-packages is
listed: `keras_attn` and its dist-info, nothing else. The repository's
`export/` and `recipes/` folders are in it as `keras_attn.export` and
`keras_attn.recipes`, and the console script runs `keras_attn.export.serve`.
"""

import configparser
import os
import pathlib
import shutil
import subprocess
import sys
import zipfile

import pytest

from tests.layout import PACKAGE_DIR
from tests.layout import module_name

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOT_COPIED = shutil.ignore_patterns(
    ".git", ".venv", "__pycache__", "*.egg-info", "build", "dist", "runs",
    ".pytest_cache", ".ruff_cache")
DIST_INFO = "keras_attn-0.1.0.dist-info"


def _run(command, **kwargs):
    proc = subprocess.run(command, capture_output=True, text=True,
                          timeout=600, **kwargs)
    assert proc.returncode == 0, (command, (proc.stdout + proc.stderr)[-3000:])
    return proc


def _site_packages(venv):
    found = list(venv.glob("lib/python3*/site-packages"))
    assert len(found) == 1, found
    return found[0]


@pytest.fixture(scope="module")
def install(tmp_path_factory):
    """`(wheel path, fresh venv, names its site-packages gained)`."""
    tmp = tmp_path_factory.mktemp("wheel")
    source, wheels, venv = tmp / "source", tmp / "wheels", tmp / "venv"
    shutil.copytree(ROOT, source, ignore=NOT_COPIED)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps",
          "--no-build-isolation", "--no-index", "-q", "-w", str(wheels),
          str(source)], cwd=tmp)
    (wheel,) = wheels.glob("keras_attn-*.whl")
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    site = _site_packages(venv)
    before = set(os.listdir(site))
    _run([sys.executable, "-m", "pip", "--python", str(venv / "bin/python"),
          "install", "--no-deps", "--no-index", "-q", str(wheel)], cwd=tmp)
    return wheel, venv, set(os.listdir(site)) - before


def _top_level(paths):
    return {path.split("/")[0] for path in paths}


def test_only_keras_attn_lands_at_the_top_level(install):
    wheel, venv, added = install
    assert added == {"keras_attn", DIST_INFO}
    with zipfile.ZipFile(wheel) as archive:
        assert _top_level(archive.namelist()) == {"keras_attn", DIST_INFO}
    record = (_site_packages(venv) / DIST_INFO / "RECORD").read_text()
    paths = [line.split(",")[0] for line in record.splitlines() if line]
    scripts = {p for p in paths if p.startswith("../")}  # bin/, outside
    assert _top_level(set(paths) - scripts) == {"keras_attn", DIST_INFO}
    assert {pathlib.PurePath(p).name for p in scripts} == {"keras-attn-serve"}


def test_export_and_recipes_are_installed_inside_keras_attn(install):
    _, venv, _ = install
    site = _site_packages(venv)
    installed = {str(p.relative_to(site).with_suffix("")).replace("/", ".")
                 .removesuffix(".__init__")
                 for p in (site / "keras_attn").rglob("*.py")}
    # Every module of the checkout, under its installed name: setup.cfg's
    # package list misses no sub-package of keras_attn, export or recipes.
    folders = ("keras_attn", *PACKAGE_DIR.values())
    expected = {module_name(p) for folder in folders
                for p in (ROOT / folder).rglob("*.py")
                if "__pycache__" not in p.parts}
    assert installed == expected
    assert {"keras_attn.export.serve", "keras_attn.export.__main__",
            "keras_attn.recipes.common", "keras_attn.recipes.stn"} <= installed


def test_console_script_runs_keras_attn_export_serve(install):
    _, venv, _ = install
    entry_points = configparser.ConfigParser()
    entry_points.read(_site_packages(venv) / DIST_INFO / "entry_points.txt")
    assert dict(entry_points["console_scripts"]) == {
        "keras-attn-serve": "keras_attn.export.serve:main"}
    script = (venv / "bin" / "keras-attn-serve").read_text()
    assert "from keras_attn.export.serve import main" in script


def test_installed_packages_import_by_their_installed_names(install, tmp_path):
    # The wheel's keras_attn, with the dependencies of this environment
    # (on PYTHONPATH, which runs no .pth: the editable install stays off),
    # away from the checkout: relative imports inside export/ and recipes/
    # resolve, and no `export` or `recipes` exists at the top level.
    _, venv, _ = install
    site = _site_packages(venv)
    deps = _site_packages(pathlib.Path(sys.prefix))
    code = (
        "import importlib.util, sys\n"
        "import keras_attn.export.__main__ as cli\n"
        "import keras_attn.recipes.stn as stn\n"
        "from keras_attn.recipes import common\n"
        "for module in (cli, stn, common):\n"
        "    assert module.__file__.startswith(sys.argv[1]), module.__file__\n"
        "assert common.__name__ == 'keras_attn.recipes.common'\n"
        "assert importlib.util.find_spec('export') is None\n"
        "assert importlib.util.find_spec('recipes') is None\n"
        "cli.parser().parse_args(['m.keras', '--to', 'tflite'])\n"
    )
    env = dict(os.environ, PYTHONPATH=str(deps), KERAS_BACKEND="numpy",
               TF_CPP_MIN_LOG_LEVEL="3")
    _run([str(venv / "bin/python"), "-c", code, str(site)], cwd=tmp_path,
         env=env)
