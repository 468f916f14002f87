"""One source of options: the specs behind PruneConfig's fields, the CLI flags and the README table.

Each PruneConfig field carries an `Option` in its metadata (`field(..., metadata=option(...))`):
help text, flag, metavar, choices, a check and the commands that offer it. The argparse flags,
`PruneConfig.check()` and the README's option table are all generated from those specs. Flags
that only the command line has (no PruneConfig field) are specs too, listed in `CLI_ONLY`.

Kept free of heavy imports: `onnxprune --help` builds its parser from this module without
loading onnx, ONNX Runtime or numpy; the modules that implement each choice re-export their
list from here.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from .errors import BadInputError

WEIGHT_CRITERIA = ("l1", "l2", "bn", "lamp", "fpgm", "random")  # importance.py
ACTIVATION_CRITERIA = ("act", "obs")  # activation.py, saliency.py (need --calib)
RECONSTRUCTION_CRITERIA = ("obs",)  # saliency.py: scores units from input covariances, not channel moments
REDUCTIONS = ("sum", "mean", "max")  # how a group's slice scores combine
COMPENSATIONS = ("none", "bias", "moments", "lsq", "auto")  # compensate.py
ALLOCATIONS = ("auto", "measured", "uniform")  # allocation.py
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}  # validate.py

COMMANDS = ("prune", "verify", "analyze")
PLANNING = ("prune", "verify")  # the commands that plan a pruning
PRUNE = ("prune",)

Check = Callable[[Any], "str | None"]  # a value -> None, or the problem ("must be ..., got ...")


@dataclass(frozen=True)
class Option:
    """One option: how the command line spells it, what it means, and what it accepts.

    `dest` is the PruneConfig field (or, for a CLI-only flag, the argparse attribute). `parse`
    turns one command-line string into a value and raises ValueError with the problem worded to
    follow the flag ("expects a number, got 'x'"); with `action="append"` it parses each
    occurrence and `collect` turns the list into the field's value. `check` is applied to the
    value (not None) by PruneConfig.check(). Options sharing an `exclusive` name are alternatives.
    """

    dest: str = ""
    flags: tuple[str, ...] = ()  # () for a Python-only field
    help: str = ""
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    parse: Callable[[str], Any] | None = None
    action: str = "store"  # store | append | store_true | store_false
    collect: Callable[[list], Any] | None = None
    check: Check | None = None
    commands: tuple[str, ...] = PLANNING
    exclusive: str | None = None
    writes: bool = False  # names an output file, checked before any work
    report: str | None = None  # a report file: 'module:function' called as function(report, path) after pruning
    default: Any = None

    @property
    def flag(self) -> str:
        """The long flag ("--ratio"), or the field name for a Python-only option."""
        return self.flags[-1] if self.flags else self.dest

    @property
    def python_only(self) -> bool:
        return not self.flags

    def offered_by(self, command: str) -> bool:
        return bool(self.flags) and command in self.commands

    def argparse_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ArgumentParser.add_argument for this option."""
        default = self.default
        if self.action == "append":  # argparse appends to its default: start from a fresh list
            default = list(default) if isinstance(default, list) else []
        kwargs: dict[str, Any] = {"dest": self.dest, "help": self.help, "action": self.action, "default": default}
        if self.action in ("store", "append"):
            kwargs.update(metavar=self.metavar, choices=self.choices)
            if self.parse is not None:
                kwargs["type"] = self._typed(self.parse)
        return kwargs

    def _typed(self, parse: Callable[[str], Any]) -> Callable[[str], Any]:
        def typed(text: str) -> Any:
            try:
                return parse(text)
            except ValueError as exc:
                raise BadInputError(f"{self.flag} {exc}") from None

        return typed

    def value_from(self, parsed: Any) -> Any:
        """The field's value from what argparse stored (`collect` applied)."""
        if self.collect is None:
            return parsed
        try:
            return self.collect(parsed)
        except ValueError as exc:
            raise BadInputError(f"{self.flag} {exc}") from None

    def usage(self) -> str:
        """The flag as the README writes it: `--ratio R`, `-o, --output OUT`, `--global`."""
        flags = ", ".join(self.flags)
        if self.action in ("store_true", "store_false") or self.python_only:
            return flags
        return f"{flags} {self.metavar or '|'.join(self.choices or ()) or self.dest.upper()}"


def option(flag: str | tuple[str, ...] | None = None, *, help: str, python_only: bool = False,
           **spec: Any) -> dict[str, Option]:
    """Field metadata: `field(default=0.3, metadata=option("--ratio", help=..., check=in_range(0, 1)))`.
    A field without a flag says so: `option(python_only=True, help=...)`."""
    flags = () if flag is None else (flag,) if isinstance(flag, str) else tuple(flag)
    if bool(flags) == python_only:
        raise TypeError(f"option({flag!r}): give a flag, or python_only=True, not both or neither")
    if not help:
        raise TypeError(f"option({flag!r}) needs help text")
    return {"option": Option(flags=flags, help=help, **spec)}


def options_of(cls: type) -> list[Option]:
    """The Option of every field of a dataclass, with its field name and default filled in."""
    found = []
    for f in dataclasses.fields(cls):
        spec = f.metadata.get("option")
        if spec is None:
            raise TypeError(f"{cls.__name__}.{f.name} has no option() metadata: give it help and a flag")
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        found.append(dataclasses.replace(spec, dest=f.name, default=default))
    return found


# -- errors that speak the caller's language ---------------------------------------------------

class OptionError(BadInputError):
    """A bad option value. The message is a template naming options by field, `{ratio}`; str()
    gives the Python names ("ratio must be ..."), `spoken(flags)` the command line's ("--ratio ...")."""

    def __init__(self, template: str):
        self.template = template
        super().__init__(self.spoken({}))

    def spoken(self, names: Mapping[str, str]) -> str:
        """The message with each `{field}` written as names[field] (the field name where absent)."""
        return self.template.format_map(_Names(names))


class _Names(dict):
    def __missing__(self, key: str) -> str:
        return key


def literal(value: Any) -> str:
    """A value as error messages show it (2.0 as 2, strings quoted), safe inside a template."""
    text = f"'{value}'" if isinstance(value, str) else repr(value)
    if isinstance(value, float) and text.endswith(".0"):
        text = text[:-2]
    return text.replace("{", "{{").replace("}", "}}")


# -- checks: a value -> None, or the problem worded to follow the option's name ----------------

def in_range(low: float, high: float, *, closed_left: bool = True, closed_right: bool = False) -> Check:
    """A number in [low, high), or the interval the flags ask for."""
    interval = f"{'[' if closed_left else '('}{low:g}, {high:g}{']' if closed_right else ')'}"

    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"must be a number in {interval}, got {literal(value)}"
        above = low <= value if closed_left else low < value
        below = value <= high if closed_right else value < high
        return None if above and below else f"must be in {interval}, got {literal(value)}"

    return check


def at_least(low: int) -> Check:
    """An integer no smaller than `low`."""

    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int):
            return f"must be an integer, got {literal(value)}"
        wanted = "a positive integer" if low == 1 else f"at least {low}"
        return None if value >= low else f"must be {wanted}, got {literal(value)}"

    return check


def one_of(choices: Any) -> Check:
    """One of the names in `choices`."""
    names = tuple(choices)

    def check(value: Any) -> str | None:
        return None if value in names else f"must be one of {', '.join(names)}, got {literal(value)}"

    return check


def each(inner: Check) -> Check:
    """Every item of a list passes `inner`."""

    def check(value: Any) -> str | None:
        return next((problem for item in value if (problem := inner(item))), None)

    return check


# -- parsers: one command-line string -> a value; ValueError worded to follow the flag ---------

def number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"expects a number, got '{text}'") from None


def integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"expects an integer, got '{text}'") from None


def comma_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def input_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """NAME:D0,D1,... -> (NAME, dims); NAME: with nothing after the colon is a scalar (shape ())."""
    name, sep, dims = text.rpartition(":")
    parts = [d.strip() for d in dims.split(",")] if dims.strip() else []
    if not sep or not name or not all(d.isdigit() and int(d) > 0 for d in parts):
        raise ValueError(f"expects NAME:D0,D1,... with positive integers (NAME: for a scalar), got '{text}'")
    from .ir import limits
    shape = tuple(int(d) for d in parts)
    if any(d > limits.MAX_DIM for d in shape):
        raise ValueError(f"'{text}': dimensions above {limits.MAX_DIM} are refused")
    return name, shape


def shape_dict(pairs: list[tuple[str, tuple[int, ...]]]) -> dict[str, tuple[int, ...]]:
    """Repeated NAME:DIMS values -> {NAME: dims}; one input given two different shapes is refused."""
    shapes: dict[str, tuple[int, ...]] = {}
    for name, shape in pairs:
        if name in shapes and shapes[name] != shape:
            raise ValueError(f"gives input '{name}' twice: {list(shapes[name])} and {list(shape)}")
        shapes[name] = shape
    return shapes


# -- flags only the command line has -----------------------------------------------------------
# The one place for them (--help and --version are argparse's own). `writes=True` ones are checked
# before any work, with -o and --plan-out; a `report=` flag's writer runs after a successful prune,
# all or nothing. A new report file is one line here, e.g.
#   Option("report_html", ("--report-html",), "write the report as one HTML page", metavar="FILE",
#          commands=PRUNE, writes=True, report="onnxprune.report_html:save_html"),
# then `python tools/gen_options_table.py` for the README.

CLI_ONLY = (
    Option("output", ("-o", "--output"), "output .onnx (default: MODEL.pruned.onnx beside the input)",
           metavar="OUT", commands=PRUNE),
    Option("report_json", ("--report-json",), "write the full report as JSON", metavar="FILE", commands=PRUNE,
           writes=True, report="onnxprune.report:PruneReport.save_json"),
    Option("report_html", ("--report-html",), "write the report as one self-contained HTML page", metavar="FILE",
           commands=PRUNE, writes=True, report="onnxprune.report_html:save_html"),
    Option("json", ("--json",), "write the groups as JSON", metavar="FILE", commands=("analyze",), writes=True),
    Option("verbose", ("-v", "--verbose"), "log every step in detail", action="store_true", commands=COMMANDS,
           default=False),
    Option("quiet", ("-q", "--quiet"), "only errors", action="store_true", commands=COMMANDS, default=False),
)
