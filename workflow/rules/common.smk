# How rules reach the package in src/momentum_ntk/: its path, the modules plan-time code imports, the shell prefix,
# and the package's source files as inputs of the cheap stages. Rules stay thin: each calls one stage of the package
# as `python -m momentum_ntk.<stage>`.

import sys
from pathlib import Path

# Snakemake strips PYTHONPATH from conda jobs and builds envs from a copy, so the path to src/ is exported inside
# every shell command (never inherited, never `pip: -e .`). The same package answers plan-time questions.
SRC = Path(workflow.basedir) / "src"
sys.path.insert(0, str(SRC))
from momentum_ntk import names, plan, stamp
from momentum_ntk.errors import UserError
from momentum_ntk.methods import names as method_names

shell.prefix(f"set -euo pipefail; export PYTHONPATH='{SRC}'; ")


# Editing a module in src/ reruns, on the next run, the analysis jobs whose code imports it (aggregation, figures,
# tables, claims, theory predictions): their source files are inputs, and a newer input makes a job rerun. The
# expensive stages (binarize, ntk, train, theory_modes) never rerun on a code change; force them with
# `snakemake --forcerun <rule>` (README, "When something goes wrong").
def stage_code(module):
    """src/momentum_ntk/<module>.py and every package module it imports (plan.stage_sources)."""
    return plan.stage_sources(SRC, module)
