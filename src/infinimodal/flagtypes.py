"""Text to values for command-line flags: pure functions that raise `argparse.ArgumentTypeError` with what was
expected. They sit low in the house because option declarations (`infinimodal.options`, `Settings` fields) name the
one that reads their flag."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def hidden_sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer sizes like 500 or 512,256, got {text!r}")
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected positive layer sizes, got {text!r}")
    return sizes


def likelihood_pair(text: str) -> tuple[str, str]:
    name, sep, likelihood = text.partition("=")
    if not sep or not name or not likelihood:
        raise argparse.ArgumentTypeError(f"expected MODALITY=LIKELIHOOD, e.g. counts=poisson, got {text!r}")
    return name, likelihood


def weight_pair(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    try:
        weight = float(value)
    except ValueError:
        weight = float("nan")
    if not sep or not name or not (weight > 0 and weight != float("inf")):
        raise argparse.ArgumentTypeError(
            f"expected MODALITY=WEIGHT with a positive weight, e.g. label=50, got {text!r}"
        )
    return name, weight


def rows_pair(text: str) -> tuple[str, int]:
    name, sep, value = text.partition("=")
    if not sep or not name or not value.strip().isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(
            f"expected MODALITY=ROWS with a positive whole number of rows, e.g. label=20, got {text!r}"
        )
    return name, int(value)


def names(text: str) -> list[str]:
    found = [part.strip() for part in text.split(",") if part.strip()]
    if not found:
        raise argparse.ArgumentTypeError("expected comma-separated modality names, e.g. m0,m1")
    return found


def given(text: str) -> list[str] | tuple[str, int]:
    """`m0,m1` (modalities of --data) or `label=3` (one class of a categorical modality)."""
    if "=" not in text:
        return names(text)
    name, _, value = text.partition("=")
    try:
        return name.strip(), int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected MODALITY=CLASS with an integer class, e.g. label=3, got {text!r}"
        ) from None


def int_or_word(text: str) -> int | str:
    """An integer, or a word such as auto (the option's own check says which words it takes)."""
    try:
        return int(text)
    except ValueError:
        return text


def number_or_none(text: str) -> float | None:
    """A positive number, or 'none'."""
    if text.lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number or 'none', got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number or 'none', got {text!r}")
    return value


def setting_pair(text: str) -> tuple[str, str]:
    """`NAME=VALUE` of `--set` (a covariate and the value to decode at)."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip() or not value.strip():
        raise argparse.ArgumentTypeError(f"expected COVARIATE=VALUE, e.g. site=A or age=70, got {text!r}")
    return name.strip(), value.strip()
