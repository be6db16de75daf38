"""Every default of the package, once. The stage CLIs and the library functions take their defaults from here, and
tests/test_defaults.py keeps each equal to the config schema's default for the same key
(workflow/schemas/config.schema.yaml), so a stage run by hand behaves as the workflow runs it.
"""

from __future__ import annotations

STEPS = 1000  # train.steps
GRAM_EVERY = 50  # train.gram_every: track the Gram spectrum every this many steps (0: first and last only)
GRAM_MAX_N = 2000  # train.gram_max_n
GRAM_SEED = 0  # train.gram_seed
DTYPE = "float32"  # train.dtype
DEVICE = "auto"  # train.device
DIVERGENCE_FACTOR = 1e6  # train.divergence_factor
ENGINE = "auto"  # train.engine: auto | direct | rowspace (momentum_ntk.rowspace, plan.choose_engine)
GAP_MAX_N = 2000  # ntk.gap_max_n
GAP_SEED = 0  # ntk.gap_seed
EIGVEC_DTYPE = "float32"  # ntk.eigvec_dtype
REPORT_STEPS = (100, 250, 500, 1000)  # analysis.report_steps
THEORY_HORIZON = 0.5  # analysis.theory_horizon
REGIME_N = (32, 64, 128)  # regime.n: sample sizes of the width sweep (momentum_ntk.regime)

# config key -> the value above (what the test compares with the schema)
SCHEMA_KEYS = {
    "train.steps": STEPS,
    "train.gram_every": GRAM_EVERY,
    "train.gram_max_n": GRAM_MAX_N,
    "train.gram_seed": GRAM_SEED,
    "train.dtype": DTYPE,
    "train.device": DEVICE,
    "train.divergence_factor": DIVERGENCE_FACTOR,
    "train.engine": ENGINE,
    "ntk.gap_max_n": GAP_MAX_N,
    "ntk.gap_seed": GAP_SEED,
    "ntk.eigvec_dtype": EIGVEC_DTYPE,
    "analysis.report_steps": list(REPORT_STEPS),
    "analysis.theory_horizon": THEORY_HORIZON,
    "regime.n": list(REGIME_N),
}
