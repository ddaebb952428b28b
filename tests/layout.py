"""Installed module names of the checkout's files.

setup.cfg installs the repository's `export/` and `recipes/` folders inside
the `keras_attn` package, as `keras_attn.export` and `keras_attn.recipes`
(`package_dir`). These helpers read that mapping, so that tests name each
module as it is installed (`export/parity.py` is `keras_attn.export.parity`)
and find the file of an installed name.
"""

from __future__ import annotations

import configparser
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _package_dir():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    mapping = {}
    for line in config["options"].get("package_dir", "").splitlines():
        if line.strip():
            package, folder = (part.strip() for part in line.split("="))
            mapping[package] = folder
    return mapping


# {"keras_attn.export": "export", "keras_attn.recipes": "recipes"}
PACKAGE_DIR = _package_dir()
FOLDER_PACKAGE = {folder: package for package, folder in PACKAGE_DIR.items()}


def module_name(path):
    """The installed dotted name of a `.py` file of the checkout."""
    parts = list(pathlib.Path(path).resolve().relative_to(ROOT)
                 .with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    if parts[0] in FOLDER_PACKAGE:
        parts[:1] = FOLDER_PACKAGE[parts[0]].split(".")
    return ".".join(parts)


def module_base(dotted):
    """The checkout path of an installed dotted name, without suffix: a
    package is the folder, a module the path less `.py`."""
    parts = dotted.split(".")
    for package, folder in PACKAGE_DIR.items():
        prefix = package.split(".")
        if parts[:len(prefix)] == prefix:
            return ROOT.joinpath(folder, *parts[len(prefix):])
    return ROOT.joinpath(*parts)
