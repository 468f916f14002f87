"""Command line: flags -> PruneConfig -> prune() / verify() / analyze().

Exit codes: 0 success, 1 a failed check (validation or oracle), 2 bad usage or bad input.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from importlib import import_module
from typing import NoReturn

from . import __version__
from . import paths
from .config import PruneConfig
from .errors import BadInputError, CheckFailedError, OnnxPruneError, OutputWriteError
from .options import CLI_ONLY, COMMANDS, Option, OptionError, input_shape, options_of

# The pruning modules (onnx, numpy, ONNX Runtime) load inside the commands that use them, so that
# --help, --version and argument errors answer at once (tests/test_startup.py). The flags come from
# PruneConfig's fields and options.CLI_ONLY (onnxprune/options.py); only MODEL and --version are
# written here.

log = logging.getLogger("onnxprune")

SUBCOMMANDS = ("verify", "analyze")  # the first argument names one; anything else is `prune`
_PARSER_TEXT = {
    "prune": dict(prog="onnxprune", description="Structurally prune an ONNX model (DepGraph).",
                  epilog="Also: 'onnxprune verify MODEL' runs the dead-channel oracle; "
                         "'onnxprune analyze MODEL' lists groups and frozen spaces."),
    "verify": dict(prog="onnxprune verify",
                   description="Run the dead-channel oracle: exit 0 when it passes, 1 when not."),
    "analyze": dict(prog="onnxprune analyze", description="List the groups and frozen spaces; writes nothing."),
}
FIELDS = options_of(PruneConfig)
FLAGS = {spec.dest: spec.flag for spec in FIELDS if not spec.python_only}  # field -> flag, for OptionError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2, no usage dump
        raise BadInputError(message)


def parse_input_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """NAME:D0,D1,... -> (NAME, dims); NAME: with nothing after the colon is a scalar (shape ())."""
    try:
        return input_shape(text)
    except ValueError as exc:
        raise BadInputError(f"--input-shape {exc}") from None


def offered(command: str) -> list[Option]:
    """The options `command` takes: PruneConfig's fields, then the CLI-only flags."""
    return [spec for spec in (*FIELDS, *CLI_ONLY) if spec.offered_by(command)]


def build_parsers() -> dict[str, argparse.ArgumentParser]:
    parsers: dict[str, argparse.ArgumentParser] = {}
    for command in COMMANDS:
        text = _PARSER_TEXT[command]
        parser = _Parser(prog=text["prog"], description=text["description"], epilog=text.get("epilog"))
        parser.add_argument("model", help="input .onnx file (never modified)")
        alternatives: dict[str, argparse._MutuallyExclusiveGroup] = {}
        for spec in offered(command):
            target: argparse._ActionsContainer = parser
            if spec.exclusive:
                if spec.exclusive not in alternatives:
                    alternatives[spec.exclusive] = parser.add_mutually_exclusive_group()
                target = alternatives[spec.exclusive]
            target.add_argument(*spec.flags, **spec.argparse_kwargs())
        if command == "prune":
            parser.add_argument("--version", action="version", version=f"onnxprune {__version__}")
        parsers[command] = parser
    return parsers


def _configure_logging(args: argparse.Namespace) -> None:
    # Progress (one line per step) on an interactive terminal; pipes and CI get warnings only.
    default = logging.INFO if sys.stderr.isatty() else logging.WARNING
    level = logging.ERROR if args.quiet else logging.DEBUG if args.verbose else default
    logging.basicConfig(level=level, format="onnxprune: %(message)s", stream=sys.stderr)


def _field_values(args: argparse.Namespace, command: str) -> dict:
    """The PruneConfig fields `command` offers, as parsed from its flags."""
    return {spec.dest: spec.value_from(getattr(args, spec.dest)) for spec in FIELDS if spec.offered_by(command)}


def _config(args: argparse.Namespace, command: str = "prune") -> PruneConfig:
    """The run's PruneConfig, built in one construction from the flags and checked (still light)."""
    config = PruneConfig(**_field_values(args, command))
    config.check()
    return config


def _written(args: argparse.Namespace, command: str) -> dict[str, str | None]:
    """The CLI-only output files of `command`, by flag (checked before any work)."""
    return {spec.flag: getattr(args, spec.dest) for spec in CLI_ONLY if spec.writes and spec.offered_by(command)}


def _write_reports(args: argparse.Namespace, report, plan_out: str | None) -> None:
    """The file of each report flag given (options.CLI_ONLY, `report=`). All or nothing: when one
    cannot be written, the model, the plan and the reports already written are removed."""
    from .ir import remove_saved
    written: list[str] = []
    try:
        for spec in CLI_ONLY:
            path = getattr(args, spec.dest, None)
            if spec.report and path:
                _writer(spec.report)(report, path)
                written.append(path)
    except OutputWriteError:
        remove_saved(report.output)
        for path in (plan_out, *written):
            if path and os.path.exists(path):
                os.remove(path)
        raise


def _writer(name: str):
    """'module:Attr.attr' -> the function it names (loaded only when its flag is given)."""
    module, _, attrs = name.partition(":")
    found = import_module(module)
    for attr in attrs.split("."):
        found = getattr(found, attr)
    return found


def _run(argv: list[str]) -> int:
    command = argv[0] if argv and argv[0] in SUBCOMMANDS else "prune"
    args = build_parsers()[command].parse_args(argv[1:] if command != "prune" else argv)
    _configure_logging(args)
    if command == "analyze":
        return _analyze(args)
    config = _config(args, command)
    from .api import check_paths, default_output, prune, verify
    from .report import format_text
    if command == "verify":
        result = verify(args.model, config)
        print(f"oracle {'PASSED' if result.passed else 'FAILED'}: {result.detail}")
        return 0 if result.passed else 1
    output = default_output(args.model) if args.output is None else args.output
    # before any work; refused paths are named by their flags
    check_paths(args.model, output, config, {"output_path": "-o", **FLAGS}, **_written(args, command))
    report = prune(args.model, args.output, config)
    _write_reports(args, report, config.plan_out)
    if not args.quiet:
        print(format_text(report))
    return 0


def _analyze(args: argparse.Namespace) -> int:
    from .api import analyze
    from .planner import tensor_ref
    from .report import frozen_reasons
    shapes = _field_values(args, "analyze")["input_shapes"]
    if args.json is not None:
        paths.check_outputs(_written(args, "analyze"), {"the input model": args.model})
    analysis = analyze(args.model, shapes)
    groups = analysis.groups
    print(f"{args.model}: {len(groups)} groups, {len(analysis.prunable)} prunable, "
          f"{sum(g.frozen_reason is not None for g in groups)} frozen")
    for g in groups:
        state = "frozen: " + g.frozen_reason if g.frozen_reason else ("exact" if g.exact else "inexact")
        print(f"  [{g.id:3d}] {g.root_label}  size {g.size}, {len(g.slices)} slices  {state}")
    for reason, count in frozen_reasons(groups):
        print(f"  frozen x{count}: {reason}")
    if args.json:
        names = analysis.graph.input_coordinates()  # the input model's tensors, not load-time copies
        rows = [{"id": g.id, "root": g.root_label, "node": g.root_node, "size": g.size, "units": g.unit_count,
                 "exact": g.exact, "inexact": list(g.inexact_reasons), "frozen": g.frozen_reason,
                 "slices": [{**tensor_ref(s.tensor, names), "axis": s.axis, "role": s.role} for s in g.slices]}
                for g in groups]
        paths.write_text(args.json, json.dumps({"groups": rows}, indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    for stream in (sys.stdout, sys.stderr):  # a file name that is not UTF-8 must not break printing it
        if hasattr(stream, "reconfigure") and getattr(stream, "errors", "") == "strict":
            stream.reconfigure(errors="backslashreplace")
    try:
        return _run(argv)
    except OptionError as exc:  # its message names fields; the command line names flags
        print(f"onnxprune: error: {exc.spoken(FLAGS)}", file=sys.stderr)
        return 2
    except BadInputError as exc:
        print(f"onnxprune: error: {exc}", file=sys.stderr)
        return 2
    except CheckFailedError as exc:
        print(f"onnxprune: check failed: {exc}", file=sys.stderr)
        return 1
    except OnnxPruneError as exc:
        print(f"onnxprune: error: {exc}", file=sys.stderr)
        return 1
    except MemoryError:
        print("onnxprune: error: out of memory (the model, its inputs or the calibration data are too large "
              "for this machine)", file=sys.stderr)
        return 1
    except OSError as exc:  # the machine, not the input: a full disk, a device error
        where = f" '{exc.filename}'" if exc.filename else ""
        print(f"onnxprune: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("onnxprune: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: one line, and the traceback with -v
        if "-v" in argv or "--verbose" in argv:
            raise
        print(f"onnxprune: internal error: {type(exc).__name__}: {exc} (run with -v for a traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
