"""Command line: flags -> PruneConfig -> prune() / verify() / analyze().

Exit codes: 0 success, 1 a failed check (validation or oracle), 2 bad usage or bad input.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from functools import partial

from typing import TYPE_CHECKING

from . import __version__
from . import paths
from .errors import BadInputError, CheckFailedError, OnnxPruneError, OutputWriteError
from .options import ACTIVATION_CRITERIA as ACT_CRITERIA
from .options import COMPENSATIONS
from .options import REDUCTIONS, WEIGHT_CRITERIA as CRITERIA
from .selection import parse_ratio_for

if TYPE_CHECKING:
    from .api import PruneConfig

# The pruning modules (onnx, numpy, ONNX Runtime) load inside the commands that use them, so that
# --help, --version and argument errors answer at once (tests/test_startup.py).

log = logging.getLogger("onnxprune")

COMMANDS = ("verify", "analyze")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, no usage dump
        raise BadInputError(message)


def parse_input_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """NAME:D0,D1,... -> (NAME, dims); NAME: with nothing after the colon is a scalar (shape ())."""
    name, sep, dims = text.rpartition(":")
    parts = [d.strip() for d in dims.split(",")] if dims.strip() else []
    if not sep or not name or not all(d.isdigit() and int(d) > 0 for d in parts):
        raise BadInputError(f"--input-shape expects NAME:D0,D1,... with positive integers (NAME: for a scalar), "
                            f"got '{text}'")
    from .ir import limits
    shape = tuple(int(d) for d in parts)
    if any(d > limits.MAX_DIM for d in shape):
        raise BadInputError(f"--input-shape '{text}': dimensions above {limits.MAX_DIM} are refused")
    return name, shape


def parse_input_shapes(texts: list[str]) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for text in texts:
        name, shape = parse_input_shape(text)
        if name in shapes and shapes[name] != shape:
            raise BadInputError(f"--input-shape gives input '{name}' twice: {list(shapes[name])} and {list(shape)}")
        shapes[name] = shape
    return shapes


def parse_ratio(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise BadInputError(f"--ratio expects a number in [0, 1), got '{text}'") from None
    if not 0.0 <= value < 1.0:
        raise BadInputError(f"--ratio must be in [0, 1), got {value}")
    return value


def _number(flag: str, kind: type = float):
    """An argparse type that turns a bad number into BadInputError naming the flag."""

    def parse(text: str):
        try:
            return kind(text)
        except ValueError:
            raise BadInputError(f"{flag} expects {'an integer' if kind is int else 'a number'}, got '{text}'") from None

    return parse


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value < 2 ** 63:
        raise BadInputError(f"--seed expects a non-negative integer, got '{text}'")
    return value


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="input .onnx file (never modified)")
    p.add_argument("--input-shape", action="append", default=[], metavar="NAME:D0,D1,...",
                   help="fix a model input's shape (repeat per input); needed for dynamic dimensions")
    p.add_argument("-v", "--verbose", action="store_true", help="log every step in detail")
    p.add_argument("-q", "--quiet", action="store_true", help="only errors")


def _plan_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ratio", type=parse_ratio, default=None,
                   help="fraction of the channels of every prunable group to remove (default 0.3); "
                        "with --global, the fraction of all ranked channels")
    p.add_argument("--importance", choices=CRITERIA + ACT_CRITERIA, default=None,
                   help="channel importance criterion (default: act with --calib, else l1)")
    p.add_argument("--group-reduction", choices=REDUCTIONS, default="sum",
                   help="how the scores of a group's coupled slices combine (default sum)")
    p.add_argument("--global", dest="global_ranking", action="store_true",
                   help="rank the channels of all groups together (scores divided by their group's mean)")
    p.add_argument("--max-ratio", type=_number("--max-ratio"), default=0.9, metavar="R",
                   help="with --global: no group loses more than this fraction of its channels (default 0.9)")
    p.add_argument("--round-to", type=_number("--round-to", int), default=8, metavar="N",
                   help="keep a multiple of N channels in every pruned group (default 8; 1 turns it off; "
                        "16 suits AVX-512 CPUs)")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--target-params", type=_number("--target-params"), metavar="F",
                        help="prune until the model keeps fraction F of its parameters (within 0.01)")
    target.add_argument("--target-macs", type=_number("--target-macs"), metavar="F",
                        help="prune until the model keeps fraction F of its MACs (within 0.01)")
    p.add_argument("--ignore", action="append", default=[], metavar="PATTERN",
                   help="never prune groups touching a node (name or op type) or initializer matching this "
                        "glob (repeatable)")
    p.add_argument("--ratio-for", action="append", default=[], type=parse_ratio_for, metavar="PATTERN=R",
                   help="ratio R for groups whose root node (name or op type) or a sliced initializer matches "
                        "PATTERN (repeatable; the first match wins)")
    p.add_argument("--plan-in", metavar="PLAN.json",
                   help="apply this saved plan exactly; ignores --ratio and --importance")
    p.add_argument("--seed", type=_seed, default=0, help="seed for random inputs and the random criterion")
    p.add_argument("--inexact", action="store_true",
                   help="also prune inexact groups (normalisation over the pruned axis, e.g. a transformer's "
                        "hidden size): outputs change beyond the removed channels")
    _calib_flags(p)


def _calib_flags(p: argparse.ArgumentParser) -> None:
    """Calibration data, activation importance and compensation (issue 5)."""
    p.add_argument("--calib", metavar="FILE.npz",
                   help="calibration inputs: one array per model input, keyed by input name, samples on axis 0")
    p.add_argument("--calib-samples", type=int, default=256, metavar="N",
                   help="samples used for statistics and compensation (default 256); the rest measure fidelity")
    p.add_argument("--compensate", choices=COMPENSATIONS, default=None,
                   help="adjust consumers of removed channels: none, bias (fold removed means into the bias), "
                        "lsq (refit kept weights by least squares); default bias with --calib, else none")


def build_parsers() -> dict[str, argparse.ArgumentParser]:
    main = _Parser(prog="onnxprune", description="Structurally prune an ONNX model (DepGraph).",
                   epilog="Also: 'onnxprune verify MODEL' runs the dead-channel oracle; "
                          "'onnxprune analyze MODEL' lists groups and frozen spaces.")
    _common(main)
    _plan_flags(main)
    main.add_argument("-o", "--output", help="output .onnx (default: MODEL.pruned.onnx beside the input)")
    main.add_argument("--plan-out", metavar="PLAN.json", help="write the plan that was applied")
    main.add_argument("--report-json", metavar="FILE", help="write the full report as JSON")
    main.add_argument("--report-html", metavar="FILE", help="write the report as one self-contained HTML page")
    main.add_argument("--no-validate", action="store_true", help="skip the ONNX Runtime comparison")
    main.add_argument("--providers", default="cpu,cuda",
                      help="comma-separated providers to validate on: cpu, cuda (default: both; cuda is "
                           "skipped with a note when unavailable)")
    main.add_argument("--version", action="version", version=f"onnxprune {__version__}")
    ver = _Parser(prog="onnxprune verify", description="Run the dead-channel oracle: exit 0 when it passes, 1 when not.")
    _common(ver)
    _plan_flags(ver)
    ana = _Parser(prog="onnxprune analyze", description="List the groups and frozen spaces; writes nothing.")
    _common(ana)
    ana.add_argument("--json", metavar="FILE", help="write the groups as JSON")
    return {"prune": main, "verify": ver, "analyze": ana}


def _configure_logging(args: argparse.Namespace) -> None:
    # Progress (one line per step) on an interactive terminal; pipes and CI get warnings only.
    default = logging.INFO if sys.stderr.isatty() else logging.WARNING
    level = logging.ERROR if args.quiet else logging.DEBUG if args.verbose else default
    logging.basicConfig(level=level, format="onnxprune: %(message)s", stream=sys.stderr)


def _config(args: argparse.Namespace) -> PruneConfig:
    from .api import PruneConfig
    shapes = parse_input_shapes(args.input_shape)
    if args.ratio is not None and (args.target_params is not None or args.target_macs is not None):
        raise BadInputError("--ratio and --target-params / --target-macs are exclusive: a target sets the ratio")
    config = PruneConfig(ratio=0.3 if args.ratio is None else args.ratio, importance=args.importance,
                         input_shapes=shapes, plan_in=args.plan_in, seed=args.seed,
                         group_reduction=args.group_reduction, global_ranking=args.global_ranking,
                         max_ratio=args.max_ratio, round_to=args.round_to, target_params=args.target_params,
                         target_macs=args.target_macs, ignore=list(args.ignore), ratio_for=list(args.ratio_for),
                         inexact=args.inexact)
    config.calib, config.calib_samples, config.compensate = args.calib, args.calib_samples, args.compensate
    if hasattr(args, "providers"):
        config.providers = [p.strip() for p in args.providers.split(",") if p.strip()]
        config.validate = not args.no_validate
        config.plan_out = args.plan_out
    return config


def _run(argv: list[str]) -> int:
    command = argv[0] if argv and argv[0] in COMMANDS else "prune"
    args = build_parsers()[command].parse_args(argv[1:] if command != "prune" else argv)
    from .api import check_paths, default_output, prune, verify
    from .ir import remove_saved
    from .report import format_text
    _configure_logging(args)
    if command == "analyze":
        return _analyze(args)
    config = _config(args)
    if command == "verify":
        result = verify(args.model, config)
        print(f"oracle {'PASSED' if result.passed else 'FAILED'}: {result.detail}")
        return 0 if result.passed else 1
    output = default_output(args.model) if args.output is None else args.output
    check_paths(args.model, output, config,
                **{"--report-json": args.report_json, "--report-html": args.report_html})  # before any work
    report = prune(args.model, args.output, config)
    if args.report_json or args.report_html:
        from .report_html import save_html
        written: list[str] = []
        try:
            for path, write in ((args.report_json, report.save_json), (args.report_html, partial(save_html, report))):
                if path:
                    write(path)
                    written.append(path)
        except OutputWriteError:  # all or nothing: no model without its reports
            remove_saved(report.output)
            for path in (config.plan_out, *written):
                if path and os.path.exists(path):
                    os.remove(path)
            raise
    if not args.quiet:
        print(format_text(report))
    return 0


def _analyze(args: argparse.Namespace) -> int:
    from .api import analyze
    from .planner import tensor_ref
    from .report import frozen_reasons
    shapes = parse_input_shapes(args.input_shape)
    if args.json is not None:
        paths.check_outputs({"--json": args.json}, {"the input model": args.model})
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
