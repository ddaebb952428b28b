"""The README's Python example runs as printed."""

import pathlib
import re

import numpy as np

README = pathlib.Path(__file__).parent.parent / "README.md"


def test_readme_cbam_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "README has no python example"
    namespace = {"images": np.random.default_rng(0).random(
        (2, 32, 32, 3), dtype="float32")}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    model, maps = namespace["model"], namespace["maps"]
    assert model.output_shape == (None, 10)
    out = maps(namespace["images"])
    shapes = sorted(tuple(v.shape) for v in out.values())
    assert shapes == [(2, 32, 32), (2, 64)]
