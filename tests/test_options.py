"""One source of options: PruneConfig's fields carry their flags, help and checks; the CLI, check()
and the README's option table are generated from them and cannot drift apart."""
from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

import gen_options_table
from onnxprune import cli
from onnxprune.config import PruneConfig
from onnxprune.errors import BadInputError
from onnxprune.config import markdown_table
from onnxprune.options import CLI_ONLY, OptionError, option, options_of

ROOT = Path(__file__).resolve().parents[1]
FIELDS = options_of(PruneConfig)
PYTHON_ONLY = {"latency_repeats"}  # fields no command line flag sets


# -- every field is an option -------------------------------------------------------------------

def test_every_field_has_help_and_a_flag_or_is_marked_python_only():
    assert [s.dest for s in FIELDS] == [f.name for f in dataclasses.fields(PruneConfig)]
    for spec in FIELDS:
        assert spec.help and spec.help[0].islower(), spec.dest
        assert spec.flags or spec.dest in PYTHON_ONLY, f"{spec.dest} has no flag"
        assert all(flag.startswith("-") for flag in spec.flags), spec.dest
    assert {s.dest for s in FIELDS if s.python_only} == PYTHON_ONLY


def test_an_option_needs_help_and_a_flag_or_the_python_only_mark():
    with pytest.raises(TypeError, match="python_only"):
        option(help="no flag and no mark")
    with pytest.raises(TypeError, match="python_only"):
        option("--x", python_only=True, help="both")
    with pytest.raises(TypeError, match="help"):
        option("--x", help="")


def test_flags_are_unique_across_fields_and_cli_only_flags():
    flags = [flag for spec in (*FIELDS, *CLI_ONLY) for flag in spec.flags]
    assert len(flags) == len(set(flags))


def test_help_states_the_fields_default():
    """Help text that names a default names the field's default (0.3, sum, 8, ...)."""
    for spec in FIELDS:
        match = re.search(r"\(default ([\w.]+)", spec.help)
        if match and not isinstance(spec.default, bool) and spec.default is not None:
            assert match.group(1) == str(spec.default), (spec.dest, spec.help)


# -- the parsers come from the fields -------------------------------------------------------------

@pytest.mark.parametrize("command", ["prune", "verify", "analyze"])
def test_argparse_defaults_equal_the_dataclass_defaults(command):
    parser = cli.build_parsers()[command]
    offered = [s for s in FIELDS if s.offered_by(command)]
    assert offered
    for spec in offered:
        assert spec.value_from(parser.get_default(spec.dest)) == spec.default, spec.dest
    if command != "analyze":
        assert cli._config(parser.parse_args(["m.onnx"]), command) == PruneConfig()


@pytest.mark.parametrize("command", ["prune", "verify", "analyze"])
def test_each_command_offers_exactly_its_options(command):
    parser = cli.build_parsers()[command]
    flags = {flag for action in parser._actions for flag in action.option_strings} - {"-h", "--help", "--version"}
    assert flags == {flag for spec in (*FIELDS, *CLI_ONLY) if command in spec.commands for flag in spec.flags}


def test_flags_reach_their_fields_in_one_construction():
    args = cli.build_parsers()["prune"].parse_args([
        "m.onnx", "--ratio", "0.5", "--global", "--max-ratio", "0.8", "--round-to", "4", "--ignore", "a",
        "--ignore", "b*", "--ratio-for", "c=0.2", "--input-shape", "x:1,3", "--input-shape", "s:",
        "--no-validate", "--providers", "cpu, cuda", "--seed", "7", "--inexact", "--calib", "c.npz",
        "--calib-samples", "9", "--compensate", "lsq", "--importance", "fpgm", "--group-reduction", "max",
        "--plan-out", "p.json"])
    assert cli._config(args) == PruneConfig(
        ratio=0.5, global_ranking=True, max_ratio=0.8, round_to=4, ignore=["a", "b*"], ratio_for=[("c", 0.2)],
        input_shapes={"x": (1, 3), "s": ()}, validate=False, providers=["cpu", "cuda"], seed=7, inexact=True,
        calib="c.npz", calib_samples=9, compensate="lsq", importance="fpgm", group_reduction="max",
        plan_out="p.json")


@pytest.mark.parametrize("argv", [["--ratio", "0.3", "--target-params", "0.5"],
                                  ["--target-macs", "0.5", "--target-params", "0.5"]])
def test_targets_and_ratio_are_alternatives_even_at_the_default_ratio(argv, capsys):
    assert cli.main(["m.onnx", *argv]) == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_verify_takes_no_prune_only_flag(capsys):
    assert cli.main(["verify", "m.onnx", "--plan-out", "p.json"]) == 2
    assert "unrecognized arguments: --plan-out" in capsys.readouterr().err


# -- errors speak the caller's language -----------------------------------------------------------

# field, a bad Python value, the same on the command line (None: no flag, or argparse refuses it first),
# the message after the name
BAD = [
    ("ratio", 2, "2", "must be in [0, 1), got 2"),
    ("ratio", float("nan"), "nan", "must be in [0, 1), got nan"),
    ("max_ratio", 1.0, "1", "must be in (0, 1), got 1"),
    ("round_to", 0, "0", "must be a positive integer, got 0"),
    ("target_params", 0.0, "0", "must be in (0, 1], got 0"),
    ("target_macs", 1.5, "1.5", "must be in (0, 1], got 1.5"),
    ("target_latency", 0.0, "0", "must be in (0, 1], got 0"),
    ("calib_samples", 1, "1", "must be at least 2, got 1"),
    ("seed", -1, "-1", "expects a non-negative integer, got -1"),
    ("providers", ["cpu", "tpu"], "cpu,tpu", "must be one of cpu, cuda, got 'tpu'"),
    ("importance", "taylor", None, "must be one of l1, l2, bn, lamp, fpgm, random, act, obs, got 'taylor'"),
    ("group_reduction", "median", None, "must be one of sum, mean, max, got 'median'"),
    ("compensate", "full", None, "must be one of none, bias, moments, lsq, auto, got 'full'"),
    ("allocation", "greedy", None, "must be one of auto, measured, uniform, got 'greedy'"),
    ("ratio_for", [("Conv*", 1.0)], None, "Conv*=1: the ratio must be in [0, 1)"),
    ("input_shapes", {"x": (1, 0)}, None, "gives 'x' the shape (1, 0): dimensions must be positive integers"),
    ("latency_repeats", -1, None, "must be at least 0, got -1"),
    ("sensitivity_budget", -1.0, "-1", "must be in [0, 86400], got -1"),
]


def test_every_check_is_exercised():
    assert {s.dest for s in FIELDS if s.check} == {field for field, *_ in BAD}


@pytest.mark.parametrize("field, value, text, problem", BAD)
def test_python_errors_name_the_field(field, value, text, problem):
    with pytest.raises(OptionError) as caught:
        PruneConfig(**{field: value}).check()
    assert str(caught.value) == f"{field} {problem}"
    assert isinstance(caught.value, BadInputError)


@pytest.mark.parametrize("field, value, text, problem", [b for b in BAD if b[2] is not None])
def test_cli_errors_name_the_flag(field, value, text, problem, capsys):
    flag = cli.FLAGS[field]
    assert cli.main(["m.onnx", f"{flag}={text}"]) == 2
    assert capsys.readouterr().err == f"onnxprune: error: {flag} {problem}\n"


@pytest.mark.parametrize("config, argv, python, flags", [
    (dict(plan_in="p.json", round_to=4, global_ranking=True), ["--plan-in", "p.json", "--round-to", "4", "--global"],
     "plan_in applies the saved plan exactly; drop global_ranking, round_to",
     "--plan-in applies the saved plan exactly; drop --global, --round-to"),
    (dict(importance="act"), ["--importance", "act"],
     "importance act needs calibration data: give calib, an .npz of input arrays",
     "--importance act needs calibration data: give --calib, an .npz of input arrays"),
    (dict(compensate="bias"), ["--compensate", "bias"],
     "compensate bias needs calibration data: give calib, an .npz of input arrays",
     "--compensate bias needs calibration data: give --calib, an .npz of input arrays"),
    (dict(target_params=0.5, target_macs=0.5), None, "target_params and target_macs are exclusive; give one", None),
    (dict(ratio=0.5, target_macs=0.5), None, "ratio and target_macs are exclusive; give one", None),
])
def test_errors_about_options_together(config, argv, python, flags, capsys):
    with pytest.raises(OptionError, match=re.escape(python)):
        PruneConfig(**config).check()
    if argv is not None:
        assert cli.main(["m.onnx", *argv]) == 2
        assert capsys.readouterr().err == f"onnxprune: error: {flags}\n"


def test_user_text_with_braces_survives_the_message():
    with pytest.raises(OptionError, match=re.escape("ratio_for {a}=1: the ratio")):
        PruneConfig(ratio_for=[("{a}", 1.0)]).check()


def test_a_bad_option_from_deep_inside_is_still_spoken_as_a_flag(monkeypatch, capsys):
    def fails(*args, **kwargs):
        raise OptionError("{round_to} must suit this model")

    monkeypatch.setattr("onnxprune.api.prune", fails)
    assert cli.main(["m.onnx"]) == 2
    assert capsys.readouterr().err == "onnxprune: error: --round-to must suit this model\n"


def test_importing_the_config_and_checking_it_stays_light():
    probe = ("import sys; from onnxprune.config import PruneConfig\n"
             "try: PruneConfig(ratio=2).check()\nexcept Exception as e: print(e)\n"
             "print([m for m in ('onnx', 'onnxruntime', 'numpy') if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.stdout.splitlines() == ["ratio must be in [0, 1), got 2", "[]"], done.stderr


# -- the README's table ---------------------------------------------------------------------------

def test_readme_holds_the_generated_option_table():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert gen_options_table.with_table(text, markdown_table()) == text, \
        "README.md's option table is stale: run python tools/gen_options_table.py"
    assert markdown_table() in text


def test_the_table_has_a_row_per_option_and_escapes_pipes():
    rows = markdown_table().splitlines()[2:]
    assert len(rows) == len(FIELDS) + len(CLI_ONLY)
    assert any(r.startswith("| `--importance l1\\|l2\\|") for r in rows)
    assert all(len(re.split(r"(?<!\\)\|", r)) == 6 for r in rows)  # four cells each
    for spec in FIELDS:
        assert any(f"| `{spec.dest}` |" in r for r in rows), spec.dest


def test_a_stale_table_is_found():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert gen_options_table.with_table(text, markdown_table().replace("(default 0.3)", "(default 0.4)")) != text


# -- a new CLI-only report flag is one Option in options.CLI_ONLY ------------------------------------

@pytest.fixture
def with_report_copy(monkeypatch):
    """--report-copy FILE: a second JSON report, declared the way --report-html would be."""
    from onnxprune import options

    extra = options.Option("report_copy", ("--report-copy",), "write the report again", metavar="FILE",
                           commands=options.PRUNE, writes=True, report="onnxprune.report:PruneReport.save_json")
    monkeypatch.setattr(options, "CLI_ONLY", (*options.CLI_ONLY, extra))
    monkeypatch.setattr(cli, "CLI_ONLY", options.CLI_ONLY)


def test_a_report_flag_is_offered_documented_checked_and_written(with_report_copy, tmp_path, capsys):
    from helpers import save
    from planner_models import conv_chain

    assert "| `--report-copy FILE` | (CLI only) | prune | write the report again |" in markdown_table()
    assert "--report-copy" not in cli.build_parsers()["verify"].format_help()
    model = save(conv_chain((16, 16)), tmp_path)
    out, first, copy = tmp_path / "o.onnx", tmp_path / "r.json", tmp_path / "copy.json"
    assert cli.main([model, "-o", str(out), "--report-copy", model, "--no-validate", "-q"]) == 2  # before work
    assert "--report-copy" in capsys.readouterr().err and not out.exists()
    assert cli.main([model, "-o", str(out), "--report-json", str(first), "--report-copy", str(copy),
                     "--no-validate", "-q"]) == 0
    assert copy.read_text() == first.read_text() and out.exists()
