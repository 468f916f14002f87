"""PruneConfig: everything a pruning run can be told, checked before any work starts."""
from __future__ import annotations

from dataclasses import dataclass, field

from . import activation, compensate
from .errors import BadInputError
from .importance import CRITERIA, REDUCTIONS
from .planner import PlanOptions
from .selection import group_ratios, ignored_groups
from .validate import PROVIDERS


@dataclass
class PruneConfig:
    """Everything a pruning run can be told. Defaults are what `onnxprune MODEL` does."""

    ratio: float = 0.3
    importance: str | None = None  # None: act with calibration data, else l1 (see `criterion`)
    group_reduction: str = "sum"
    global_ranking: bool = False
    max_ratio: float = 0.9
    round_to: int = 8  # see tools/bench_round_to.py: channel counts off multiples of 8 drop ORT's NCHWc kernels
    target_params: float | None = None
    target_macs: float | None = None
    ignore: list[str] = field(default_factory=list)
    ratio_for: list[tuple[str, float]] = field(default_factory=list)
    input_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    plan_in: str | None = None
    plan_out: str | None = None
    validate: bool = True
    providers: list[str] | None = None  # None: cpu, plus cuda when available
    seed: int = 0
    latency_repeats: int = 10
    # also prune inexact groups (transformer hidden size through LayerNorm/RMSNorm, channels under a
    # normalisation): outputs change beyond the removed channels (--inexact)
    inexact: bool = False
    # -- calibration (issue 5) --
    calib: str | None = None  # .npz of input arrays, samples along axis 0
    calib_samples: int = 256
    # none | bias | lsq; None: compensate.DEFAULT_MODE with calibration data, else none
    compensate: str | None = None

    def check(self) -> None:
        if not 0.0 <= self.ratio < 1.0:
            raise BadInputError(f"--ratio must be in [0, 1), got {self.ratio}")
        if self.criterion not in CRITERIA + activation.CRITERIA:
            raise BadInputError(f"--importance must be one of {', '.join(CRITERIA + activation.CRITERIA)}, "
                                f"got '{self.importance}'")
        for p in self.providers or []:
            if p not in PROVIDERS:
                raise BadInputError(f"--providers accepts {', '.join(PROVIDERS)}, got '{p}'")
        self._check_calib()
        self._check_planner()

    def _check_calib(self) -> None:
        if self.compensate is not None and self.compensate not in compensate.MODES:
            raise BadInputError(f"--compensate must be one of {', '.join(compensate.MODES)}, got '{self.compensate}'")
        if self.calib_samples < 2:
            raise BadInputError(f"--calib-samples must be at least 2, got {self.calib_samples}")
        if not self.calib and (self.criterion in activation.CRITERIA or self.compensate in ("bias", "lsq")):
            what = f"--importance {self.importance}" if self.criterion in activation.CRITERIA else \
                f"--compensate {self.compensate}"
            raise BadInputError(f"{what} needs calibration data: give --calib FILE.npz")

    @property
    def criterion(self) -> str:
        """The importance criterion: activation-based when calibration data is given. Magnitude
        selection paired with compensation hurts transformers: it removes channels that are large
        on a few tokens (MiniLM's [CLS]), whose all-token mean then shifts every other token."""
        return self.importance or ("act" if self.calib else "l1")

    @property
    def compensation(self) -> str:
        return self.compensate or (compensate.DEFAULT_MODE if self.calib else "none")

    def _check_planner(self) -> None:
        if self.group_reduction not in REDUCTIONS:
            raise BadInputError(f"--group-reduction must be one of {', '.join(REDUCTIONS)}, "
                                f"got '{self.group_reduction}'")
        if not 0.0 < self.max_ratio < 1.0:
            raise BadInputError(f"--max-ratio must be in (0, 1), got {self.max_ratio}")
        if self.round_to < 1:
            raise BadInputError(f"--round-to must be a positive integer, got {self.round_to}")
        for name, value in (("--target-params", self.target_params), ("--target-macs", self.target_macs)):
            if value is not None and not 0.0 < value <= 1.0:
                raise BadInputError(f"{name} must be in (0, 1], got {value}")
        if self.target_params is not None and self.target_macs is not None:
            raise BadInputError("--target-params and --target-macs are exclusive; give one")
        for pattern, ratio in self.ratio_for:
            if not 0.0 <= ratio < 1.0:
                raise BadInputError(f"--ratio-for {pattern}={ratio}: the ratio must be in [0, 1)")
        if self.plan_in and self.planner_flags():
            raise BadInputError(f"--plan-in applies the saved plan exactly; drop {', '.join(self.planner_flags())}")

    def planner_flags(self) -> list[str]:
        """Planner options set away from their defaults (they cannot apply to a saved plan)."""
        default = PruneConfig()
        names = {"global_ranking": "--global", "max_ratio": "--max-ratio", "round_to": "--round-to",
                 "target_params": "--target-params", "target_macs": "--target-macs", "ignore": "--ignore",
                 "ratio_for": "--ratio-for", "group_reduction": "--group-reduction"}
        return [flag for attr, flag in names.items() if getattr(self, attr) != getattr(default, attr)]

    def plan_options(self, analysis) -> PlanOptions:
        """Planner options with the user's patterns resolved to the analysed groups."""
        return PlanOptions(ratio=self.ratio, global_ranking=self.global_ranking, max_ratio=self.max_ratio,
                           round_to=self.round_to,
                           ratio_for=group_ratios(analysis.groups, analysis.graph, self.ratio_for),
                           ignored=ignored_groups(analysis.groups, analysis.graph, self.ignore))
