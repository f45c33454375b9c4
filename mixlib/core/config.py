"""Job settings: TOML defaults, then command-line overrides, checked into a frozen dataclass.

A job's settings are one frozen dataclass whose fields are declared with :func:`option`, typed ``bool``, ``int``,
``float``, ``str`` or ``tuple`` (of strings: a TOML string or list, a flag given once or more). Every field is a
key of the job's TOML file and a ``--flag`` of its command; a flag beats the file. Unknown keys, wrong
types and out-of-range values are :class:`~mixlib.core.errors.InputError` naming the key and where it came from.
"""

import argparse
import dataclasses
import math
import tomllib
from pathlib import Path

from .errors import InputError

# The sections of a command's --help, in this order.
GROUPS = ("input and output", "model", "execution", "cluster")


def option(default, help, *, group="execution", choices=None, minimum=None, maximum=None):
    """Declare one setting: a dataclass field with its help text, its section of ``--help`` (one of
    :data:`GROUPS`) and the values it accepts."""
    if group not in GROUPS:
        raise ValueError(f"unknown option group {group!r}; choose one of {GROUPS}")
    meta = {"help": help, "group": group, "choices": choices, "minimum": minimum, "maximum": maximum}
    return dataclasses.field(default=default, metadata=meta)


def flag_name(key):
    return "--" + key.replace("_", "-")


class Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are :class:`InputError` (one line, exit status 2)."""

    def error(self, message):
        raise InputError(f"{message} (see --help)")


def add_options(parser, settings_class):
    """Add one ``--flag`` per field of ``settings_class``, in sections of ``--help`` (:data:`GROUPS`); a flag left
    out parses to ``None``."""
    fields = sorted(dataclasses.fields(settings_class), key=lambda f: (GROUPS.index(f.metadata["group"]),
                                                                     _declared_at(settings_class, f.name)))
    sections = {name: parser.add_argument_group(name) for name in GROUPS
                if any(f.metadata["group"] == name for f in fields)}
    for field in fields:
        meta = field.metadata
        section = sections[meta["group"]]
        choices = f"; one of {', '.join(map(str, meta['choices']))}" if meta["choices"] else ""
        text = f"{meta['help']} (default: {field.default!r}{choices})"
        if field.type is bool:
            section.add_argument(flag_name(field.name), dest=field.name, default=None,
                                 action=argparse.BooleanOptionalAction, help=text)
        elif field.type is tuple:  # a list of strings: the flag may be given several times
            section.add_argument(flag_name(field.name), dest=field.name, default=None, action="append",
                                 metavar=field.name.upper(), help=text + "; may be given several times")
        else:
            section.add_argument(flag_name(field.name), dest=field.name, default=None, type=field.type,
                                 choices=meta["choices"], metavar=field.name.upper(), help=text)


def _declared_at(settings_class, name):
    """How far up ``settings_class``'s bases the field ``name`` is declared (0: in the class itself), so that a
    job's own options come before the ones it inherits."""
    return next(depth for depth, cls in enumerate(settings_class.__mro__)
                if name in vars(cls).get("__annotations__", {}))


def read_toml(path):
    """Read a TOML file of settings, or raise InputError saying what is wrong with it."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise InputError(f"config file {path} does not exist; pass --config PATH to an existing TOML file") from None
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"config file {path} is not valid TOML: {e}") from None
    except OSError as e:
        raise InputError(f"cannot read config file {path}: {e.strerror}") from None


def load(settings_class, file_values, file_name, overrides):
    """Merge file values and overrides into a checked ``settings_class`` instance.

    Parameters
    ----------
    settings_class : dataclass type whose fields were declared with :func:`option`
    file_values : dict, the TOML file's keys
    file_name : str, names the file in error messages
    overrides : dict, key -> value or None; None means "not given"
    """
    known = {f.name: f for f in dataclasses.fields(settings_class)}
    for key, value in file_values.items():
        if key not in known:
            raise InputError(f"unknown key '{key}' in {file_name}; known keys: {', '.join(known)}")
        if isinstance(value, dict):
            raise InputError(f"key '{key}' in {file_name} is a table; this file takes plain keys only")
    values = {}
    for key, field in known.items():
        if overrides.get(key) is not None:
            values[key] = _checked(field, overrides[key], f"{flag_name(key)}")
        elif key in file_values:
            values[key] = _checked(field, file_values[key], f"'{key}' in {file_name}")
        else:
            values[key] = field.default
    return settings_class(**values)


def _checked(field, value, where):
    meta = field.metadata
    kind = field.type
    if kind is bool and not isinstance(value, bool):
        raise InputError(f"{where} must be true or false, not {value!r}")
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise InputError(f"{where} must be a whole number, not {value!r}")
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"{where} must be a number, not {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise InputError(f"{where} is {value!r}; it must be a finite number")
    if kind is tuple:
        value = (value,) if isinstance(value, str) else value
        if not isinstance(value, (list, tuple)) or not all(isinstance(item, str) for item in value):
            raise InputError(f"{where} must be a string or a list of strings, not {value!r}")
        value = tuple(value)
    if kind is str and not isinstance(value, str):
        raise InputError(f"{where} must be a string, not {value!r}")
    if meta["choices"] is not None and value not in meta["choices"]:
        raise InputError(f"{where} is {value!r}; choose one of {', '.join(map(str, meta['choices']))}")
    if meta["minimum"] is not None and value < meta["minimum"]:
        raise InputError(f"{where} is {value!r}; it must be at least {meta['minimum']}")
    if meta["maximum"] is not None and value > meta["maximum"]:
        raise InputError(f"{where} is {value!r}; it must be at most {meta['maximum']}")
    return value
