"""Strict readers shared by the commands: the positive-seconds argparse type."""

import argparse

import pytest

from kubefence.cli import build_parser
from kubefence.common.settings import positive_seconds


@pytest.mark.parametrize(("text", "expected"), [("2", 2.0), ("0.5", 0.5), ("1e3", 1000.0)], ids=["int", "fraction", "exponent"])
def test_positive_seconds_accepts(text, expected):
    assert positive_seconds(text) == expected


@pytest.mark.parametrize("text", ["nan", "NaN", "inf", "-inf", "0", "-0", "-1", "", "2s"])
def test_positive_seconds_rejects(text):
    with pytest.raises(argparse.ArgumentTypeError) as caught:
        positive_seconds(text)
    assert repr(text) in str(caught.value)


@pytest.mark.parametrize(
    "argv",
    [
        ["demo", "--timeout", "nan"],
        ["demo", "--timeout", "0"],
        ["demo", "--timeout", "-1"],
        ["webhook", "--policy-interval", "nan"],
        ["webhook", "--policy-interval", "inf"],
        ["webhook", "--certificate-interval", "nan"],
    ],
    ids=["demo-nan", "demo-zero", "demo-negative", "policy-nan", "policy-inf", "certificate-nan"],
)
def test_positive_seconds_options_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as caught:
        build_parser().parse_args(argv)
    assert caught.value.code == 2
    assert f"argument {argv[1]}: invalid number of seconds {argv[2]!r}" in capsys.readouterr().err
