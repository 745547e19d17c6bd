"""Allowed option values, declared once as data and checked before any work starts.

The library functions check their keyword arguments against these declarations when
they are called (`check_options`), and the command-line parsers build their argument
types from the same declarations (`argument_type`), so the library never accepts what
a command refuses, and a bad value is refused before a single image is decoded. The
pattern is scikit-learn's `_parameter_constraints`.
"""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from headstart.errors import UsageError


@dataclass(frozen=True)
class Choice:
    """One of a fixed set of strings."""

    values: tuple[str, ...]

    def problem(self, value: Any) -> str | None:
        if value in self.values:
            return None
        return f"must be one of {', '.join(self.values)}"

    def parse(self, text: str) -> str:
        return text


@dataclass(frozen=True)
class Range:
    """A number of type `kind` in [low, high]; `open_low` makes it (low, high]."""

    kind: type
    low: float | None = None
    high: float | None = None
    open_low: bool = False

    def problem(self, value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                self.kind is int and not float(value).is_integer()):
            return f"must be {'a whole number' if self.kind is int else 'a number'}"
        too_low = self.low is not None and (
            value < self.low or (self.open_low and value == self.low))
        too_high = self.high is not None and value > self.high
        if too_low or too_high:
            return f"must be {self.describe()}"
        return None

    def describe(self) -> str:
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.open_low else '>='} {self.low:g}")
        if self.high is not None:
            parts.append(f"<= {self.high:g}")
        return " and ".join(parts) or "a number"

    def parse(self, text: str):
        try:
            return self.kind(text)
        except ValueError:
            noun = "a whole number" if self.kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {noun}, got {text!r}") from None


@dataclass(frozen=True)
class Subset:
    """One or more of a fixed set of strings: a sequence in the library, comma-separated
    on the command line (`--formats keras,saved_model`)."""

    values: tuple[str, ...]

    def problem(self, value: Any) -> str | None:
        names = (value,) if isinstance(value, str) else tuple(value)
        if names and all(name in self.values for name in names):
            return None
        some = "both" if len(self.values) == 2 else "more"
        return f"takes one or {some} of {', '.join(self.values)}, comma-separated"

    def parse(self, text: str) -> tuple[str, ...]:
        return tuple(name.strip() for name in text.split(",") if name.strip())


Constraint = Choice | Range | Subset


def check_option(name: str, value: Any, constraint: Constraint, *, allow_none: bool = False,
                 flag: str | None = None) -> None:
    """Raise UsageError naming the option when `value` breaks `constraint`."""
    if value is None and allow_none:
        return
    problem = constraint.problem(value)
    if problem:
        label = flag or name
        raise UsageError(f"{label} {problem}, got {value!r}.")


def check_options(values: Mapping[str, Any], constraints: Mapping[str, Constraint], *,
                  nullable: tuple[str, ...] = (), flags: Mapping[str, str] | None = None) -> None:
    """Check every declared option present in `values`; None is allowed for `nullable` ones."""
    flags = flags or {}
    for name, constraint in constraints.items():
        if name in values:
            check_option(name, values[name], constraint, allow_none=name in nullable,
                         flag=flags.get(name, "--" + name.replace("_", "-")))


def argument_type(constraint: Constraint):
    """An argparse `type=` that parses and checks against `constraint` (usage error, status 2)."""
    def parse(text: str):
        value = constraint.parse(text)
        problem = constraint.problem(value)
        if problem:
            raise argparse.ArgumentTypeError(f"{problem}, got {text}")
        return value

    parse.__name__ = "value"  # argparse names the type in its messages
    return parse


def default_of(function: Callable, name: str) -> Any:
    """The default of `function`'s keyword `name`: a command's default is its library's."""
    return inspect.signature(function).parameters[name].default
