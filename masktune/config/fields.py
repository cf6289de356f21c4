"""The types a param can have, each a small validator that names the key in its message.

`Field.check(key, value)` returns the value (normalised: floats as float, lists as tuples) or raises a
one-line `UserError` such as `params.yaml: train_erm.epochs must be an integer >= 1, got 'three'`.
`nullable` fields accept null; `recipe` fields take `recipes.<dataset>.<same key>` when null.
"""
from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from masktune.errors import UserError

SOURCE = "params.yaml"


def invalid(key: str, expected: str, value: Any) -> UserError:
    return UserError(f"{SOURCE}: {key} must be {expected}, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class Field:
    nullable: bool = False   # null is a valid value of its own (e.g. "no limit")
    recipe: bool = False     # null means: the dataset's recipe value at the same path
    fallback: str | None = None  # null means: the value of this top-level key (a section's seed: `seed`)

    def check(self, key: str, value: Any) -> Any:
        if value is None and (self.nullable or self.recipe or self.fallback):
            return None
        return self._check(key, value)

    def expected(self) -> str:
        return self._describe() + (" or null" if self.nullable else "")

    def _fail(self, key: str, value: Any) -> UserError:
        return invalid(key, self.expected(), value)

    def _check(self, key: str, value: Any) -> Any:
        raise NotImplementedError

    def _describe(self) -> str:
        raise NotImplementedError


def _bounds(minimum, maximum, exclusive_minimum: bool = False) -> str:
    text = ""
    if minimum is not None:
        text += f" {'>' if exclusive_minimum else '>='} {minimum}"
    if maximum is not None:
        text += f" {'and ' if minimum is not None else ''}<= {maximum}"
    return text


@dataclass(frozen=True)
class Int(Field):
    minimum: int | None = None
    maximum: int | None = None

    def _describe(self) -> str:
        return "an integer" + _bounds(self.minimum, self.maximum)

    def _check(self, key, value):
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._fail(key, value)
        if (self.minimum is not None and value < self.minimum) or (self.maximum is not None and value > self.maximum):
            raise self._fail(key, value)
        return value


@dataclass(frozen=True)
class Number(Field):
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False

    def _describe(self) -> str:
        return "a number" + _bounds(self.minimum, self.maximum, self.exclusive_minimum)

    def _check(self, key, value):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self._fail(key, value)
        if self.minimum is not None and (value < self.minimum or (self.exclusive_minimum and value == self.minimum)):
            raise self._fail(key, value)
        if self.maximum is not None and value > self.maximum:
            raise self._fail(key, value)
        return float(value)


@dataclass(frozen=True)
class Choice(Field):
    options: tuple[str, ...] = ()

    def _describe(self) -> str:
        return "one of " + ", ".join(repr(o) for o in self.options)

    def _check(self, key, value):
        if value not in self.options:
            raise self._fail(key, value)
        return value


@dataclass(frozen=True)
class Bool(Field):
    def _describe(self) -> str:
        return "true or false"

    def _check(self, key, value):
        if not isinstance(value, bool):
            raise self._fail(key, value)
        return value


@dataclass(frozen=True)
class Text(Field):
    def _describe(self) -> str:
        return "a non-empty string"

    def _check(self, key, value):
        if not isinstance(value, str) or not value:
            raise self._fail(key, value)
        return value


@dataclass(frozen=True)
class TextList(Field):
    """A non-empty list of distinct non-empty strings (e.g. rules in order of preference)."""
    def _describe(self) -> str:
        return "a non-empty list of distinct non-empty strings"

    def _check(self, key, value):
        if (not isinstance(value, list) or not value or any(not isinstance(v, str) or not v for v in value)
                or len(set(value)) != len(value)):
            raise self._fail(key, value)
        return tuple(value)


@dataclass(frozen=True)
class FilePath(Field):
    def _describe(self) -> str:
        return "a path (string)"

    def _check(self, key, value):
        if not isinstance(value, str) or not value:
            raise self._fail(key, value)
        return Path(value)


@dataclass(frozen=True)
class IntList(Field):
    length: int = 2
    minimum: int = 0
    maximum: int = 2**31 - 1
    ascending: bool = False  # [min, max] pairs: first <= second

    def _describe(self) -> str:
        order = ", in ascending order" if self.ascending else ""
        return f"a list of {self.length} integers in [{self.minimum}, {self.maximum}]{order}"

    def _check(self, key, value: Sequence):
        if not isinstance(value, list) or len(value) != self.length or any(
            isinstance(v, bool) or not isinstance(v, int) or not self.minimum <= v <= self.maximum for v in value
        ):
            raise self._fail(key, value)
        if self.ascending and list(value) != sorted(value):
            raise self._fail(key, value)
        return tuple(value)


@dataclass(frozen=True)
class NameList(Field):
    """A list of distinct names from `options`, possibly empty (e.g. the methods of one kind to run)."""
    options: tuple[str, ...] = ()

    def _describe(self) -> str:
        return "a list of distinct names from " + ", ".join(repr(o) for o in self.options)

    def _check(self, key, value):
        if not isinstance(value, list) or any(v not in self.options for v in value) or len(set(value)) != len(value):
            raise self._fail(key, value)
        return tuple(value)


@dataclass(frozen=True)
class NumberList(Field):
    """A non-empty list of distinct finite numbers > 0, at most `maximum` if set (e.g. DFR's grid of inverse
    regularisation strengths, selective classification's target coverages in percent). YAML 1.2 reads `.inf`
    as infinity: an unregularised C is refused, as is NaN."""
    maximum: float | None = None

    def _describe(self) -> str:
        bound = f" and <= {self.maximum:g}" if self.maximum is not None else ""
        return f"a non-empty list of distinct finite numbers > 0{bound}"

    def _check(self, key, value):
        if (not isinstance(value, list) or not value or len(set(value)) != len(value) or any(
                isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not v > 0
                or (self.maximum is not None and v > self.maximum) for v in value)):
            raise self._fail(key, value)
        return tuple(float(v) for v in value)


@dataclass(frozen=True)
class IntSet(Field):
    """A list of distinct integers >= `minimum`, possibly empty (one foreach stage per entry, e.g. the
    control models' seed offsets)."""
    minimum: int = 0

    def _describe(self) -> str:
        return f"a list of distinct integers >= {self.minimum}"

    def _check(self, key, value):
        if (not isinstance(value, list) or len(set(value)) != len(value)
                or any(isinstance(v, bool) or not isinstance(v, int) or v < self.minimum for v in value)):
            raise self._fail(key, value)
        return tuple(value)


@dataclass(frozen=True)
class AutoInt(Field):
    """"auto" (a rule picks the integer) or an integer >= minimum."""
    minimum: int = 1

    def _describe(self) -> str:
        return f"'auto' or an integer >= {self.minimum}"

    def _check(self, key, value):
        if value == "auto":
            return value
        if isinstance(value, bool) or not isinstance(value, int) or value < self.minimum:
            raise self._fail(key, value)
        return value


@dataclass(frozen=True)
class MethodLists(Field):
    """The `methods` param as a stage reads it: per family a list of names, or a mapping of (groups, trainer)
    pairs (`Pairs`); which names exist is the registry's, checked once by `check_params` (a stage reading the
    lists imports no method)."""

    def _describe(self) -> str:
        return "a mapping of method families to lists of names or mappings of pairs"

    def _check(self, key, value):
        if not isinstance(value, dict) or not all(isinstance(v, (list, dict)) for v in value.values()):
            raise self._fail(key, value)
        from types import MappingProxyType

        return MappingProxyType({family: tuple(v) if isinstance(v, list) else v for family, v in value.items()})


MAX_WORKERS = 64
WORKERS = Int(0, MAX_WORKERS)  # DataLoader processes of a stage: how it runs, not what it computes


@dataclass(frozen=True)
class Seed(Field):
    """A seed: an integer >= 0; with `random_allowed`, also `random` (a seed drawn from the OS and recorded by
    the stage that uses it: ClusterFix's official code seeds nothing), read as None. A section's seed left null
    is the top-level `seed` (`fallback`), so that `-S seed=1` seeds every training and sampling draw of a run."""
    random_allowed: bool = False

    def _describe(self) -> str:
        return ("an integer >= 0" + (" or 'random'" if self.random_allowed else "")
                + (" (null: the top-level seed)" if self.fallback else ""))

    def _check(self, key, value):
        if self.random_allowed and value == RANDOM_SEED:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self._fail(key, value)
        return value


RANDOM_SEED = "random"
RUN_SEED = Seed()               # the top-level `seed`
SEED = Seed(fallback="seed")    # a section's seed: null is the top-level one
SEED_OR_RANDOM = Seed(fallback="seed", random_allowed=True)  # ... or `random`: drawn and recorded

NAME = re.compile(r"[a-z][a-z0-9_]*")  # fullmatch: `$` would let a trailing newline through


@dataclass(frozen=True)
class Pairs(Field):
    """Methods as (groups, trainer) pairs: {name: {groups: <a groups file>, trainer: <one of trainers>,
    selection: <one of selections>}} (no `selection` where `selections` is empty: DFR tunes on the groups).
    Names are lower-case identifiers (they name stages, checkpoints and files). Which groups files exist
    is checked against the listed group inference by `schema.validate`."""
    trainers: tuple[str, ...] = ()
    selections: tuple[str, ...] = ()

    def keys(self) -> tuple[str, ...]:
        return ("groups", "trainer", "selection") if self.selections else ("groups", "trainer")

    def _describe(self) -> str:
        entry = "{groups: <groups file>, trainer: " + "|".join(self.trainers)
        entry += (", selection: " + "|".join(self.selections) if self.selections else "") + "}"
        return "a mapping of method names (lower-case identifiers) to " + entry

    def _check(self, key, value):
        if not isinstance(value, dict):
            raise self._fail(key, value)
        for name, pair in value.items():
            where = f"{key}.{name}"
            if not isinstance(name, str) or not NAME.fullmatch(name):
                raise invalid(key, "a mapping whose names are lower-case identifiers", name)
            if not isinstance(pair, dict) or set(pair) != set(self.keys()):
                raise invalid(where, "a mapping with exactly the keys " + ", ".join(self.keys()), pair)
            Text().check(f"{where}.groups", pair["groups"])
            Choice(options=self.trainers).check(f"{where}.trainer", pair["trainer"])
            if self.selections:
                Choice(options=self.selections).check(f"{where}.selection", pair["selection"])
        return value
