"""Every code block in README.md and docs/ runs, or is checked, as printed.

- ```python blocks are executed.
- Every command of a ```bash block is parsed by the real parser of the
  program it names (`python -m MODULE ...`, `keras-attn-serve`), so a flag
  or choice the docs show and the code does not accept fails here. The docs'
  commands run from the checkout root, where `python -m export` and
  `python -m recipes.NAME` name the installed `keras_attn.export` and
  `keras_attn.recipes.NAME`; they are parsed by those modules.
- `test_walkthrough` then runs the README's path for real, in a temporary
  folder: train (the README's recipe command with a tiny budget appended),
  export (as printed), the TFLite snippet of docs/export.md on the int8
  file, the server, and every `curl` of README.md and docs/serving.md
  against it (the checkout on `PYTHONPATH`, as from its root).
- ```text blocks are sample output, and `docker` needs a daemon: neither runs.
"""

import argparse
import contextlib
import importlib
import io
import os
import pathlib
import re
import shlex
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.layout import FOLDER_PACKAGE
from tests.layout import PACKAGE_DIR

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^( *)```(\w*)\n(.*?)^\1```", re.S | re.M)
LANGUAGES = {"python", "bash", "text"}
NOT_RUN = {"docker": "needs a Docker daemon and the tensorflow/serving image"}
CURL_PATH = re.compile(
    r"^localhost:\d+/v1/models/\w+(/versions/\d+)?(/metadata|:predict)?$")


def _blocks(language=None):
    for page in PAGES:
        text = page.read_text()
        for match in BLOCK.finditer(text):
            indent, lang, code = match.groups()
            code = "\n".join(line[len(indent):] for line in code.splitlines())
            line = text[:match.start()].count("\n") + 1
            if language is None or lang == language:
                yield f"{page.relative_to(ROOT)}:{line}", lang, code


def _ids(blocks):
    return [name for name, _, _ in blocks]


def _commands(code):
    """Shell commands of a block: continuation lines and multi-line quotes
    joined, comments dropped, split on `&&` and `|`."""
    commands, buffer = [], ""
    for line in code.splitlines():
        buffer += line + "\n"
        if buffer.rstrip().endswith("\\"):
            buffer = buffer.rstrip()[:-1] + " "
            continue
        try:
            tokens = shlex.split(buffer, comments=True)
        except ValueError:  # an open quote: the command goes on
            continue
        buffer = ""
        command = []
        for token in tokens + ["&&"]:
            if token in ("&&", "|"):
                if command:
                    commands.append(command)
                command = []
            else:
                command.append(token)
    assert not buffer.strip(), f"unterminated command: {buffer!r}"
    return commands


class _Parsed(Exception):
    pass


def _installed_module(module_name):
    """The module `python -m module_name` runs from the checkout root, by its
    installed name (one copy of each module in this process)."""
    first, _, rest = module_name.partition(".")
    if first in FOLDER_PACKAGE:
        module_name = ".".join(filter(None, (FOLDER_PACKAGE[first], rest)))
    if module_name in PACKAGE_DIR:  # a package run with -m: its __main__
        module_name += ".__main__"
    return module_name


def _parse(module_name, argv):
    """Run `python -m module_name argv` up to its argument parsing."""
    module = importlib.import_module(_installed_module(module_name))
    original = argparse.ArgumentParser.parse_known_args

    def parse_and_stop(self, args=None, namespace=None):
        parsed = original(self, args, namespace)
        raise _Parsed(parsed)

    stderr = io.StringIO()
    argparse.ArgumentParser.parse_known_args = parse_and_stop
    try:
        with contextlib.redirect_stderr(stderr):
            module.main(list(argv))
    except _Parsed as parsed:
        namespace, unknown = parsed.args[0]
        if unknown:
            pytest.fail(f"python -m {module_name} {shlex.join(argv)}: "
                        f"unrecognized arguments {unknown}")
        return namespace
    except SystemExit:
        pytest.fail(f"python -m {module_name} {shlex.join(argv)}: "
                    f"{stderr.getvalue().strip()}")
    finally:
        argparse.ArgumentParser.parse_known_args = original
    pytest.fail(f"{module_name}.main() returned without parsing arguments")


def _extras():
    text = (ROOT / "setup.cfg").read_text()
    section = text.split("[options.extras_require]")[1].split("\n[")[0]
    return set(re.findall(r"^(\w+) =", section, re.M))


def _check_command(tokens):
    while tokens and re.match(r"^\w+=", tokens[0]):  # VAR=value prefixes
        tokens = tokens[1:]
    program, args = tokens[0], tokens[1:]
    if program in NOT_RUN:
        return
    if program == "bash":
        assert (ROOT / args[0]).is_file(), args[0]
    elif program.endswith("python") and args[:1] == ["-c"]:
        compile(args[1], "python -c", "exec")
    elif program.endswith("python"):
        assert args[0] == "-m", tokens
        module, argv = args[1], args[2:]
        if module == "pytest":
            paths = [a for i, a in enumerate(argv) if not a.startswith("-")
                     and (i == 0 or argv[i - 1] not in ("-n", "-m", "-k"))]
            assert all((ROOT / path).exists() for path in paths), paths
            markers = (ROOT / "pyproject.toml").read_text()
            for i, a in enumerate(argv[:-1]):
                if a == "-m":
                    assert f'"{argv[i + 1]}:' in markers, argv[i + 1]
        else:
            _parse(module, argv)
    elif program == "pip":
        assert args[:2] == ["install", "-e"], tokens
        extras = set(re.search(r"\[(.*)\]", args[2]).group(1).split(","))
        assert extras <= _extras(), f"no such extra: {extras - _extras()}"
    elif program == "keras-attn-serve":
        assert "keras-attn-serve = keras_attn.export.serve:main" in (
            ROOT / "setup.cfg").read_text()
        _parse("keras_attn.export.serve", args)
    elif program == "curl":
        url = [a for a in args if not a.startswith("-")][-1]
        assert CURL_PATH.match(url), f"not a route of the server: {url}"
    else:
        pytest.fail(f"docs show a command this test does not know: {tokens}")


def test_docs_have_only_known_block_languages():
    blocks = list(_blocks())
    assert len(blocks) >= 8
    assert {lang for _, lang, _ in blocks} <= LANGUAGES, [
        (name, lang) for name, lang, _ in blocks if lang not in LANGUAGES]


PYTHON = list(_blocks("python"))
NEEDS_EXPORT = "exports/"  # snippets reading an exported file: walkthrough


@pytest.mark.parametrize(
    "name, code", [(n, c) for n, _, c in PYTHON if NEEDS_EXPORT not in c],
    ids=_ids([b for b in PYTHON if NEEDS_EXPORT not in b[2]]))
def test_python_block_runs(name, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(code, name, "exec"), {})


BASH = list(_blocks("bash"))


@pytest.mark.parametrize("name, code", [(n, c) for n, _, c in BASH],
                         ids=_ids(BASH))
def test_bash_block_parses(name, code):
    commands = _commands(code)
    assert commands, f"{name}: empty block"
    for tokens in commands:
        _check_command(tokens)


def test_readme_cbam_example_gives_its_maps():
    name, _, code = next(iter(_blocks("python")))
    namespace = {}
    exec(compile(code, name, "exec"), namespace)
    assert namespace["model"].output_shape == (None, 10)
    images = np.random.default_rng(0).random((2, 32, 32, 3), "float32")
    out = namespace["maps"](images)
    shapes = sorted(tuple(v.shape) for v in out.values())
    assert shapes == [(2, 32, 32), (2, 64)]


def test_ci_runs_the_readme_test_command():
    tests = _readme_block("# Main job").split("# Tests", 1)[1]
    command = tests.splitlines()[1].split("&&", 1)[1].strip()
    assert command in (ROOT / ".ci/run").read_text()
    assert "-m slow" in command  # both tiers


def test_command_splitting():
    code = ("A=1 python -m x --a 'b c' && y # note\n"
            "z \\\n  --w\nq '{\n \"k\": 1}' | r\n")
    assert _commands(code) == [["A=1", "python", "-m", "x", "--a", "b c"],
                               ["y"], ["z", "--w"], ["q", '{\n "k": 1}'],
                               ["r"]]


def test_checkout_names_are_parsed_by_the_installed_modules():
    assert _installed_module("export") == "keras_attn.export.__main__"
    assert _installed_module("keras_attn.export") == (
        "keras_attn.export.__main__")
    assert _installed_module("export.serve") == "keras_attn.export.serve"
    assert _installed_module("recipes.stn") == "keras_attn.recipes.stn"
    assert _installed_module("benchmarks.models") == "benchmarks.models"


def test_parse_check_catches_a_wrong_flag():
    with pytest.raises(pytest.fail.Exception, match="--no-such-flag"):
        _parse("recipes.cbam_resnet", ["--no-such-flag"])
    with pytest.raises(pytest.fail.Exception, match="invalid choice"):
        _parse("recipes.stn", ["--dataset", "imagenet"])


# ----------------------------------------------------------------------------
# The README's path, run


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _checkout_env():
    """The environment of a command run from the checkout root (its
    `python -m export`, `python -m recipes.NAME`), run elsewhere."""
    venv = pathlib.Path(sys.executable).parent
    return {**os.environ, "PATH": f"{venv}:{os.environ['PATH']}",
            "PYTHONPATH": str(ROOT)}


def _shell(command, cwd, **kwargs):
    env = _checkout_env()
    command = command.replace(".venv/bin/python", sys.executable)
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env,
                          capture_output=True, text=True, **kwargs)


def _readme_block(first_word):
    for name, _, code in _blocks("bash"):
        if name.startswith("README") and code.lstrip().startswith(first_word):
            return code
    raise AssertionError(f"README has no bash block starting {first_word}")


@pytest.mark.slow
@pytest.mark.tf_only
def test_walkthrough(tmp_path):
    # 1. Train: the README's main-job recipe command, with a tiny budget.
    main_job = _readme_block("# Main job").splitlines()[1]
    train = main_job.split("&&", 1)[1].strip() + (
        " --epochs 1 --steps-per-epoch 2 --train-images 256"
        " --test-images 64 --no-export --no-pictures")
    run = _shell(train, tmp_path, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (tmp_path / "runs/cbam_resnet/model.keras").is_file()

    # 2. Export, exactly as printed (both export commands of the README).
    export_block = _readme_block("python -m export")
    commands = [c for c in export_block.replace("\\\n", " ").splitlines()]
    run = _shell(commands[0], tmp_path, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    tflite = tmp_path / "exports/cbam_resnet/tflite"
    assert {p.name for p in tflite.glob("*.tflite")} >= {
        "model_float32.tflite", "model_dynamic.tflite", "model_int8.tflite"}

    # 3. The TFLite snippet of docs/export.md, on the int8 file.
    name, _, code = next(b for b in _blocks("python") if NEEDS_EXPORT in b[2])
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        namespace = {}
        exec(compile(code, name, "exec"), namespace)
    finally:
        os.chdir(cwd)
    assert namespace["out"]["probabilities"].shape == (1, 10)

    # 4. Serve as printed, on a free port, and run every curl of the docs.
    port = str(_free_port())
    serve = commands[1].split("#")[0].replace("8501", port)
    server = subprocess.Popen(
        ["bash", "-c", "exec " + serve.replace("python", sys.executable, 1)],
        cwd=tmp_path, env=_checkout_env(),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _write_png(tmp_path / "shirt.png")
        deadline = time.monotonic() + 120
        while _shell(f"curl -sf localhost:{port}/v1/models/cbam_resnet",
                     tmp_path).returncode != 0:
            assert server.poll() is None, server.stdout.read()[-3000:]
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(1)
        curls = [export_block.splitlines()[-1]]
        serving = (ROOT / "docs/serving.md").read_text()
        curls += [c for c in BLOCK.findall(serving)[0][2].replace(
            "\\\n", " ").splitlines() if c and not c.startswith("#")]
        assert len(curls) == 5
        for command in curls:
            run = _shell("set -o pipefail; " + command.replace("8501", port)
                         + " --fail-with-body -sS", tmp_path, timeout=120)
            assert run.returncode == 0, (command, run.stdout, run.stderr)
            assert '"error"' not in run.stdout, (command, run.stdout)
            if ":predict" in command:
                assert '"probabilities"' in run.stdout, run.stdout[:500]
    finally:
        server.terminate()
        server.wait(timeout=30)


def _write_png(path):
    import tensorflow as tf

    image = np.zeros((28, 28, 1), np.uint8)
    image[6:22, 8:20] = 200  # a bright block, like a garment's silhouette
    path.write_bytes(tf.io.encode_png(image).numpy())
