"""The export tests' model zoo takes overrides, and the quantization
benchmark's `--width` uses them only where `width` multiplies channels."""

import pytest

from benchmarks import quantization
from benchmarks import tiny_models

# Trains models: the second tier (`pytest -m slow`).
pytestmark = [pytest.mark.tf_only, pytest.mark.slow]


def test_overrides_reach_the_builder():
    narrow = tiny_models.build("attention56")
    wide = tiny_models.build("attention56", width=0.125)
    # Twice the channels: about four times the weights of every conv.
    assert 3 * narrow.count_params() < wide.count_params()
    assert narrow.count_params() == tiny_models.build(
        "attention56").count_params()


def test_ram_takes_no_overrides():
    with pytest.raises(ValueError, match="RAM takes no overrides"):
        tiny_models.build("ram", width=0.5)


def test_width_flag_refuses_models_without_a_channel_multiplier(capsys):
    with pytest.raises(SystemExit) as exit_info:
        quantization.main(["--models", "attention56", "stn", "aa_wrn",
                           "--width", "0.25"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "drop stn, aa_wrn from --models" in err
