"""One home for every default: momentum_ntk.defaults equals the config schema's defaults, and the stage CLIs and
library functions take theirs from it."""

from __future__ import annotations

import inspect
from pathlib import Path

import yaml

from momentum_ntk import claims, compare, defaults, loop, ntk, theory, theory_report, train

ROOT = Path(__file__).resolve().parents[1]


def schema_default(key: str):
    node = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
    for part in key.split("."):
        node = node["properties"][part]
    return node["default"]


def cli_default(parser, flag: str):
    return next(a.default for a in parser._actions if flag in a.option_strings)


def test_defaults_equal_the_schema():
    assert defaults.SCHEMA_KEYS, "no defaults"
    for key, value in defaults.SCHEMA_KEYS.items():
        assert schema_default(key) == value, key


def test_stage_clis_and_library_use_them():
    p = train.build_parser()
    for flag, key in [("--steps", "train.steps"), ("--gram-every", "train.gram_every"), ("--dtype", "train.dtype"),
                      ("--gram-max-n", "train.gram_max_n"), ("--gram-seed", "train.gram_seed"),
                      ("--device", "train.device"), ("--divergence-factor", "train.divergence_factor"),
                      ("--engine", "train.engine")]:  # fmt: skip
        assert cli_default(p, flag) == schema_default(key), flag
    for fn in (loop.train_many, loop.train):
        sig = inspect.signature(fn)
        assert sig.parameters["engine"].default == schema_default("train.engine")
        assert sig.parameters["gram_every"].default == schema_default("train.gram_every")
        assert sig.parameters["divergence_factor"].default == schema_default("train.divergence_factor")
    p = ntk._parser()
    for flag, key in [("--gap-max-n", "ntk.gap_max_n"), ("--gap-seed", "ntk.gap_seed"),
                      ("--eigvec-dtype", "ntk.eigvec_dtype"), ("--gram-max-n", "train.gram_max_n")]:  # fmt: skip
        assert cli_default(p, flag) == schema_default(key), flag
    assert list(defaults.REPORT_STEPS) == schema_default("analysis.report_steps")
    assert defaults.THEORY_HORIZON == schema_default("analysis.theory_horizon")
    assert inspect.signature(compare.horizon_step).parameters["fraction"].default == defaults.THEORY_HORIZON
    predict = theory.build_parser()._subparsers._group_actions[0].choices["predict"]
    assert cli_default(predict, "--horizon-fraction") == schema_default("analysis.theory_horizon")
    assert cli_default(claims.build_parser(), "--horizon-fraction") == schema_default("analysis.theory_horizon")
    overlay = theory_report.build_parser()._subparsers._group_actions[0].choices["overlay"]
    assert cli_default(overlay, "--horizon-fraction") == schema_default("analysis.theory_horizon")
