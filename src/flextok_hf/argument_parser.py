"""The argument parser of every `flextok-hf` training command: `HfArgumentParser` with `list[int]` fields.

```python
parser = FlexTokArgumentParser((TokenizerModelArguments, TokenizerDataArguments, TokenizerTrainingArguments))
model_args, data_args, training_args = parser.parse(["--fsq_levels", "8,5,5,5", "--output_dir", "out"])
```

What it adds to `HfArgumentParser`:

- a `list[int]` field accepts `--budgets 1,2,4`, `--budgets 1 2 4` or a mix; a bad value is an argparse error naming
  the flag. Dicts, JSON files and direct construction go through [`normalize_int_list_fields`] in the dataclasses'
  `__post_init__`, so `{"budgets": "1,2,4"}` works too.
- an optional bool (`bool | None`, e.g. `--bf16`) given alone means True, like a plain bool flag.
- [`FlexTokArgumentParser.parse`] takes CLI strings, a dict, a single `.json` path or already-parsed dataclasses.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import types
import typing
from collections.abc import Sequence

from transformers import HfArgumentParser
from transformers.hf_argparser import string_to_bool


def parse_int_list(value, name: str, minimum: int | None = None) -> list[int]:
    """`"1,2,4"`, `"1 2 4"`, `["1,2", "4"]` or `[1, 2, 4]` -> `[1, 2, 4]`.

    Raises a `ValueError` naming `name` for anything else, an empty list, or a value below `minimum`."""
    allowed = "integers separated by commas or spaces, e.g. 1,2,4"
    parts = [value] if isinstance(value, (str, int)) else value
    if not isinstance(parts, (list, tuple)):
        raise ValueError(f"`{name}` must be {allowed}, got {value!r}.")
    numbers = []
    for part in parts:
        if isinstance(part, int) and not isinstance(part, bool):
            numbers.append(part)
            continue
        if not isinstance(part, str):
            raise ValueError(f"`{name}` must be {allowed}, got {value!r}.")
        for token in part.replace(",", " ").split():
            try:
                numbers.append(int(token))
            except ValueError:
                raise ValueError(f"`{name}` must be {allowed}, got {value!r}.") from None
    if not numbers:
        raise ValueError(f"`{name}` must hold at least one integer ({allowed}), got {value!r}.")
    if minimum is not None and min(numbers) < minimum:
        raise ValueError(f"`{name}` must hold integers >= {minimum}, got {value!r}.")
    return numbers


class IntListAction(argparse.Action):
    """argparse action (with `nargs="+"`) storing a `list[int]` from `1,2,4`, `1 2 4` or a mix of both."""

    def __init__(self, option_strings, dest, minimum: int | None = None, **kwargs):
        kwargs.setdefault("nargs", "+")
        super().__init__(option_strings, dest, **kwargs)
        self.minimum = minimum

    def __call__(self, parser, namespace, values, option_string=None):
        try:
            text = " ".join(values) if isinstance(values, list) else values
            setattr(namespace, self.dest, parse_int_list(text, option_string or self.dest, self.minimum))
        except ValueError as error:
            raise argparse.ArgumentError(self, str(error)) from None


def _is_int_list(annotation) -> bool:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_is_int_list(arg) for arg in typing.get_args(annotation) if arg is not type(None))
    return typing.get_origin(annotation) is list and typing.get_args(annotation) == (int,)


def normalize_int_list_fields(arguments) -> None:
    """Turns string values of the `list[int]` fields of a dataclass instance into lists (see [`parse_int_list`]).

    Called from `__post_init__`, so dicts, JSON files and direct construction accept `"1,2,4"` like the CLI does."""
    hints = typing.get_type_hints(type(arguments))
    for field in dataclasses.fields(arguments):
        value = getattr(arguments, field.name)
        if value is not None and _is_int_list(hints.get(field.name)):
            setattr(arguments, field.name, parse_int_list(value, field.name))


class FlexTokArgumentParser(HfArgumentParser):
    """`HfArgumentParser` whose `list[int]` fields take `1,2,4` or `1 2 4`, and whose optional bools alone mean True."""

    def add_argument(self, *args, **kwargs):
        if kwargs.get("nargs") == "+" and kwargs.get("type") is int:
            del kwargs["type"], kwargs["nargs"]
            kwargs["action"] = IntListAction
        elif kwargs.get("type") is string_to_bool and "nargs" not in kwargs:
            kwargs.update(nargs="?", const=True)
        return super().add_argument(*args, **kwargs)

    def parse(self, args: Sequence[str] | dict | tuple | None = None) -> tuple:
        """The dataclasses from CLI strings (default `sys.argv[1:]`), a dict, a single `.json` path, or the
        already-parsed tuple (returned unchanged)."""
        if isinstance(args, tuple) and len(args) == len(self.dataclass_types):
            if all(isinstance(arg, cls) for arg, cls in zip(args, self.dataclass_types)):
                return args
        if isinstance(args, dict):
            return self.parse_dict(args)
        argv = list(sys.argv[1:] if args is None else args)
        if len(argv) == 1 and argv[0].endswith(".json"):
            return self.parse_json_file(os.path.abspath(argv[0]))
        return self.parse_args_into_dataclasses(argv)


__all__ = ["FlexTokArgumentParser", "IntListAction", "normalize_int_list_fields", "parse_int_list"]
