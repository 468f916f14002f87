"""PruneConfig: everything a pruning run can be told, checked before any work starts.

Each field carries its option spec (onnxprune/options.py): the CLI flags, the README's option
table and check() are generated from it. Light: importing it loads neither onnx nor numpy.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .options import (ACTIVATION_CRITERIA, ALLOCATIONS, COMMANDS, COMPENSATIONS, PRUNE, PROVIDERS, REDUCTIONS,
                      WEIGHT_CRITERIA, OptionError, at_least, comma_list, each, in_range, input_shape, integer,
                      literal, number, one_of, option, options_of, shape_dict)
from .selection import parse_ratio_for

if TYPE_CHECKING:
    from .planner import PlanOptions

# Options that shape a new plan: a saved plan (plan_in) is applied exactly, so they cannot apply.
PLANNER_OPTIONS = ("global_ranking", "max_ratio", "round_to", "target_params", "target_macs", "target_latency",
                   "ignore", "ratio_for", "group_reduction")


def _seed(value: Any) -> str | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2 ** 63
    return None if ok else f"expects a non-negative integer, got {literal(value)}"


def _ratios(value: Any) -> str | None:
    bad = [(p, r) for p, r in value if not 0.0 <= r < 1.0]
    return f"{bad[0][0]}={literal(bad[0][1])}: the ratio must be in [0, 1)" if bad else None


def _shapes(value: Any) -> str | None:
    bad = [n for n, dims in value.items() if not all(isinstance(d, int) and d > 0 for d in dims)]
    return f"gives '{bad[0]}' the shape {literal(value[bad[0]])}: dimensions must be positive integers" if bad else None


@dataclass
class PruneConfig:
    """Everything a pruning run can be told. Defaults are what `onnxprune MODEL` does."""

    ratio: float = field(default=0.3, metadata=option(
        "--ratio", metavar="R", parse=number, check=in_range(0, 1), exclusive="target",
        help="fraction of the channels of every prunable group to remove (default 0.3); "
             "with --global, the fraction of all ranked channels"))
    target_params: float | None = field(default=None, metadata=option(
        "--target-params", metavar="F", parse=number, exclusive="target",
        check=in_range(0, 1, closed_left=False, closed_right=True),
        help="prune until the model keeps fraction F of its parameters (within 0.01)"))
    target_macs: float | None = field(default=None, metadata=option(
        "--target-macs", metavar="F", parse=number, exclusive="target",
        check=in_range(0, 1, closed_left=False, closed_right=True),
        help="prune until the model keeps fraction F of its MACs (within 0.01)"))
    target_latency: float | None = field(default=None, metadata=option(
        "--target-latency", metavar="F", parse=number, exclusive="target",
        check=in_range(0, 1, closed_left=False, closed_right=True),
        help="prune until the model keeps about fraction F of its ONNX Runtime latency on the first of "
             "--providers, estimated from a per-group table timed once (each group alone at half its units)"))
    # None: act with calibration data, else l1 (see `criterion`)
    importance: str | None = field(default=None, metadata=option(
        "--importance", choices=WEIGHT_CRITERIA + ACTIVATION_CRITERIA,
        check=one_of(WEIGHT_CRITERIA + ACTIVATION_CRITERIA),
        help="channel importance criterion (default: act with --calib, else l1)"))
    group_reduction: str = field(default="sum", metadata=option(
        "--group-reduction", choices=REDUCTIONS, check=one_of(REDUCTIONS),
        help="how the scores of a group's coupled slices combine (default sum)"))
    global_ranking: bool = field(default=False, metadata=option(
        "--global", action="store_true",
        help="rank the channels of all groups together (scores divided by their group's mean)"))
    max_ratio: float = field(default=0.9, metadata=option(
        "--max-ratio", metavar="R", parse=number, check=in_range(0, 1, closed_left=False),
        help="with --global: no group loses more than this fraction of its channels (default 0.9)"))
    # see tools/bench_round_to.py: channel counts off multiples of 8 drop ORT's NCHWc kernels
    round_to: int = field(default=8, metadata=option(
        "--round-to", metavar="N", parse=integer, check=at_least(1),
        help="keep a multiple of N channels in every pruned group (default 8; 1 turns it off; "
             "16 suits AVX-512 CPUs)"))
    ignore: list[str] = field(default_factory=list, metadata=option(
        "--ignore", action="append", metavar="PATTERN",
        help="never prune groups touching a node (name or op type) or initializer matching this "
             "glob (repeatable)"))
    ratio_for: list[tuple[str, float]] = field(default_factory=list, metadata=option(
        "--ratio-for", action="append", metavar="PATTERN=R", parse=parse_ratio_for, check=_ratios,
        help="ratio R for groups whose root node (name or op type) or a sliced initializer matches "
             "PATTERN (repeatable; the first match wins)"))
    input_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict, metadata=option(
        "--input-shape", action="append", metavar="NAME:D0,D1,...", parse=input_shape, collect=shape_dict,
        check=_shapes, commands=COMMANDS,
        help="fix a model input's shape (repeat per input); needed for dynamic dimensions"))
    plan_in: str | None = field(default=None, metadata=option(
        "--plan-in", metavar="PLAN.json", help="apply this saved plan exactly; ignores --ratio and --importance"))
    plan_out: str | None = field(default=None, metadata=option(
        "--plan-out", metavar="PLAN.json", commands=PRUNE, help="write the plan that was applied"))
    validate: bool = field(default=True, metadata=option(
        "--no-validate", action="store_false", commands=PRUNE, help="skip the ONNX Runtime comparison"))
    # None: cpu, plus cuda when available
    providers: list[str] | None = field(default=None, metadata=option(
        "--providers", metavar="cpu,cuda", parse=comma_list, check=each(one_of(PROVIDERS)), commands=PRUNE,
        help="comma-separated providers to validate on: cpu, cuda (default: both; cuda is "
             "skipped with a note when unavailable)"))
    seed: int = field(default=0, metadata=option(
        "--seed", metavar="N", parse=integer, check=_seed,
        help="seed for random inputs and the random criterion"))
    latency_repeats: int = field(default=10, metadata=option(
        python_only=True, check=at_least(0),
        help="timed runs per provider when validating (default 10; 0 skips timing)"))
    inexact: bool = field(default=False, metadata=option(
        "--inexact", action="store_true",
        help="also prune inexact groups (normalisation over the pruned axis, e.g. a transformer's "
             "hidden size): outputs change beyond the removed channels"))
    prune_cache: bool = field(default=False, metadata=option(
        "--prune-cache", action="store_true",
        help="also prune attention / KV heads that reach a decoder's KV-cache inputs and outputs "
             "(past_key_values.N.*, present.N.*): CHANGES THE MODEL'S SIGNATURE, their heads axis"))
    # -- calibration (issue 5) --
    calib: str | None = field(default=None, metadata=option(
        "--calib", metavar="FILE.npz",
        help="calibration inputs: one array per model input, keyed by input name, samples on axis 0"))
    calib_samples: int = field(default=256, metadata=option(
        "--calib-samples", metavar="N", parse=integer, check=at_least(2),
        help="samples used for statistics and compensation (default 256); the rest measure fidelity"))
    # None: compensate.DEFAULT_MODE with calibration data, else none
    compensate: str | None = field(default=None, metadata=option(
        "--compensate", choices=COMPENSATIONS, check=one_of(COMPENSATIONS),
        help="adjust consumers of removed channels: none, bias (fold removed means into the bias), moments "
             "(bias, then restore each output channel's mean and spread), lsq (refit kept weights by least "
             "squares, ridge validated on held-out rows), auto (lsq, unless bias is closer to the original on the "
             "held-out samples); default auto with --calib, else none"))
    allocation: str = field(default="auto", metadata=option(
        "--allocation", choices=ALLOCATIONS, check=one_of(ALLOCATIONS), commands=PRUNE,
        help="how a --target-* is spread over the groups: measured (each group's measured sensitivity, the "
             "least total output error; needs --calib), uniform (one ratio for all), auto (with --calib: "
             "the measured one unless one ratio for all is closer to the original on the held-out "
             "samples; else uniform)"))
    sensitivity: bool = field(default=False, metadata=option(
        "--sensitivity", action="store_true", commands=PRUNE,
        help="with --calib: measure how much each group's removal changes the outputs (curves in the report)"))
    sensitivity_budget: float = field(default=60.0, metadata=option(
        "--sensitivity-budget", metavar="S", parse=number, commands=PRUNE,
        check=in_range(0, 86400, closed_right=True),
        help="with --sensitivity: seconds the measuring may take (default 60.0); groups not reached are listed"))

    def check(self) -> None:
        """Refuse bad values before any work: OptionError naming the fields (the CLI names flags)."""
        for spec in options_of(type(self)):
            value = getattr(self, spec.dest)
            problem = spec.check(value) if spec.check is not None and value is not None else None
            if problem:
                raise OptionError(f"{{{spec.dest}}} {problem.replace('{', '{{').replace('}', '}}')}")
        self._check_together()

    def _check_together(self) -> None:
        changed = self.changed_options()
        alternatives: dict[str, list[str]] = {}
        for spec in options_of(type(self)):
            if spec.exclusive and spec.dest in changed:
                alternatives.setdefault(spec.exclusive, []).append(spec.dest)
        for given in alternatives.values():
            if len(given) > 1:
                raise OptionError(f"{{{given[0]}}} and {{{given[1]}}} are exclusive; give one")
        uses_act = self.criterion in ACTIVATION_CRITERIA
        if not self.calib and (uses_act or self.compensate not in (None, "none")):
            what = f"{{importance}} {self.importance}" if uses_act else f"{{compensate}} {self.compensate}"
            raise OptionError(f"{what} needs calibration data: give {{calib}}, an .npz of input arrays")
        if self.sensitivity and not self.calib:
            raise OptionError("{sensitivity} measures on calibration samples: give {calib}, an .npz of input arrays")
        if self.allocation == "measured" and not self.calib:
            raise OptionError("{allocation} measured spreads a target by measured sensitivity: give {calib}, an .npz "
                              "of input arrays")
        if self.prune_cache and self.calib:
            raise OptionError("{prune_cache} with {calib} is not supported yet: the calibration samples' KV-cache "
                              "inputs would need the pruned heads removed; prune without {calib}")
        planner = [name for name in PLANNER_OPTIONS if name in changed]
        if self.plan_in and planner:
            raise OptionError(f"{{plan_in}} applies the saved plan exactly; drop "
                              f"{', '.join('{%s}' % name for name in planner)}")

    def changed_options(self) -> list[str]:
        """The fields set away from their defaults."""
        return [s.dest for s in options_of(type(self)) if getattr(self, s.dest) != s.default]

    @property
    def criterion(self) -> str:
        """The importance criterion: activation-based when calibration data is given. Magnitude
        selection paired with compensation hurts transformers: it removes channels that are large
        on a few tokens (MiniLM's [CLS]), whose all-token mean then shifts every other token."""
        return self.importance or ("act" if self.calib else "l1")

    @property
    def compensation(self) -> str:
        from .compensate import DEFAULT_MODE
        return self.compensate or (DEFAULT_MODE if self.calib else "none")

    @property
    def target(self) -> tuple[str, float | None]:
        """The cost target: ("params" | "macs" | "latency", kept fraction), or ("macs", None) for none."""
        for metric in ("params", "macs", "latency"):
            value = getattr(self, f"target_{metric}")
            if value is not None:
                return metric, value
        return "macs", None

    @property
    def measured_allocation(self) -> bool:
        """Whether a target is spread by measured sensitivity (allocation.py)."""
        has_target = self.target_params is not None or self.target_macs is not None
        return has_target and bool(self.calib) and self.allocation != "uniform" and not self.plan_in

    def plan_options(self, analysis) -> PlanOptions:
        """Planner options with the user's patterns resolved to the analysed groups."""
        from .planner import PlanOptions
        from .selection import group_ratios, ignored_groups
        return PlanOptions(ratio=self.ratio, global_ranking=self.global_ranking, max_ratio=self.max_ratio,
                           round_to=self.round_to,
                           ratio_for=group_ratios(analysis.groups, analysis.graph, self.ratio_for),
                           ignored=ignored_groups(analysis.groups, analysis.graph, self.ignore))


def markdown_table() -> str:
    """The README's option table: every flag, its PruneConfig field, its commands and its help."""
    from .options import CLI_ONLY  # looked up at call time: tests add a flag to it
    rows = ["| flag | `PruneConfig` field | commands | what it does |", "|---|---|---|---|"]
    for spec in [*options_of(PruneConfig), *CLI_ONLY]:
        flag = "(Python only)" if spec.python_only else f"`{spec.usage()}`"
        field = "(CLI only)" if spec in CLI_ONLY else f"`{spec.dest}`"
        commands = "" if spec.python_only else ", ".join(spec.commands)
        repeat = " (repeatable)" if spec.action == "append" and "repeat" not in spec.help else ""
        cells = [cell.replace("|", "\\|") for cell in (flag, field, commands, spec.help + repeat)]
        rows.append(f"| {' | '.join(cells)} |")
    return "\n".join(rows) + "\n"
