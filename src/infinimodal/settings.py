"""Typed settings that each latent family and aggregator declares beside its code.

A family or aggregator owns a `Settings` dataclass whose fields are its options, each made with `setting(...)`
(default, help, allowed values, a check). From those fields, and nothing else:

- `infinimodal.config.ModelConfig` gets one field per option name (shared names, such as `alpha`, are one field),
  so config.json records them;
- the command line gets one flag per option (`--latent-dim` for `latent_dim`), with its help and choices;
- `build_latent` / `build_aggregator` validate the chosen component's options and pass them on.

So a new family with a new option is one file and one registry line.
"""

from __future__ import annotations

import dataclasses
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Callable, ClassVar, Iterable

from .errors import InfinimodalError


#: The Python types a settings field of each annotated type accepts (bool is refused for numbers).
_KINDS = {"int": (int,), "float": (int, float), "str": (str,)}


class SettingError(InfinimodalError, ValueError):
    """A setting outside its allowed values: a user's error (one line) and a ValueError for library callers."""


def setting(
    default: Any,
    help: str | Callable[[], str],
    *,
    choices: Iterable | None = None,
    check: Callable[[Any], bool] | None = None,
    requirement: str = "",
    parse: Callable[[str], Any] | None = None,
    flag: str | None = None,
    metavar: str | None = None,
    pairs: bool = False,
    negative: str | None = None,
) -> Any:
    """A settings field: its default, a help text (or a function that writes it when the parser is built), optionally
    the allowed values or a check (with what it requires), and how its flag reads: `parse` turns the flag's text into
    the value (default: the annotated type), `flag` replaces the name's own (`--weight` for `weights`), `pairs` makes
    a repeatable flag of MODALITY=VALUE pairs (`parse` reads one) collected into a dict, and `negative` names the flag
    that turns a true-by-default switch off (`--no-standardize`)."""
    metadata = {
        "help": help,
        "choices": tuple(choices) if choices is not None else None,
        "check": check,
        "requirement": requirement,
        "parse": parse,
        "flag": flag,
        "metavar": metavar,
        "pairs": pairs,
        "negative": negative,
    }
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def positive(value) -> bool:
    return value > 0 and value == value and value != float("inf")


def flag(name: str) -> str:
    """The command-line flag of a settings field: latent_dim -> --latent-dim."""
    return "--" + name.replace("_", "-")


def field_flag(f: dataclasses.Field) -> str:
    """The flag a field is given by: its declared one, or its name's (`flag`)."""
    return f.metadata.get("flag") or flag(f.name)


def field_help(f: dataclasses.Field) -> str:
    text = f.metadata.get("help", "")
    return text() if callable(text) else text


@dataclass
class Settings:
    """Base of the settings dataclasses (see the module docstring)."""

    #: One line for the command line's help: which component these settings belong to.
    owner = ""
    #: Options added after runs were saved: {option: the option whose value a saved run without it trained with}.
    absent_means: ClassVar[dict[str, str]] = {}

    def validate(self) -> None:
        """Raise one InfinimodalError line naming the flag for a value outside its choices or failing its check."""
        for f in fields(self):
            value = getattr(self, f.name)
            expected = _KINDS.get(str(f.type))
            if expected is not None and (isinstance(value, bool) or not isinstance(value, expected)):
                raise SettingError(
                    f"{field_flag(f)} must be {'an integer' if f.type == 'int' else 'a number' if f.type == 'float' else 'text'}, got {value!r}"
                )
            choices, check = f.metadata.get("choices"), f.metadata.get("check")
            if choices is not None and value not in choices:
                raise SettingError(f"{field_flag(f)} must be one of {', '.join(map(str, choices))}, got {value!r}")
            try:
                fine = check is None or check(value)
            except TypeError:
                fine = False
            if not fine:
                raise SettingError(f"{field_flag(f)} must be {f.metadata.get('requirement') or 'valid'}, got {value!r}")

    @classmethod
    def from_values(cls, values: dict) -> "Settings":
        """The settings from the entries of `values` that are its fields (None: the field's default), validated."""
        names = {f.name for f in fields(cls)}
        settings = cls(**{k: v for k, v in values.items() if k in names and v is not None})
        settings.validate()
        return settings


def field_default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default_factory is not MISSING else f.default


def merged_fields(classes: Iterable[type[Settings]]) -> dict[str, list[tuple[type[Settings], dataclasses.Field]]]:
    """Every option name across the settings classes, with the classes (and fields) that declare it, in order."""
    merged: dict[str, list] = {}
    for cls in classes:
        for f in fields(cls):
            merged.setdefault(f.name, []).append((cls, f))
    return merged
