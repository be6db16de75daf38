# The files and parameters of the jobs over the grid (grid.smk): every run file of a dataset, the runs and files of
# one train or theory-prediction job (a pack or one run), and the theory modes file a packed train job also writes.

import itertools


def runs_of(dataset, template="run"):
    """Every run file (or sidecar) of the grid for one dataset."""
    return expand(PATHS[template], dataset=dataset, **GRID)


PACK_RUNS = list(
    itertools.product(GRID["method"], GRID["eta_divisor"], GRID["beta"])
)  # (method, c, β), in order


def job_files(template):
    """The files of one job: those of every run of a pack (wildcards dataset, width, seed left open), or of one run."""
    if not PACKED:
        return [PATHS[template]]
    method, eta_divisor, beta = (list(v) for v in zip(*PACK_RUNS))
    return expand(
        PATHS[template],
        zip,
        method=method,
        eta_divisor=eta_divisor,
        beta=beta,
        allow_missing=True,
    )


def job_runs(wildcards):
    """(method, eta_divisor, beta) of every run of the job, in the order of job_files."""
    if PACKED:
        return PACK_RUNS
    return [(wildcards.method, wildcards.eta_divisor, wildcards.beta)]


def job_params(column):
    """One column of job_runs as a list (Snakemake joins it with spaces in the shell command)."""
    return lambda wildcards: [run[column] for run in job_runs(wildcards)]


# A packed train job also writes the theory modes file of its (dataset, width, seed) (modes.modes_of_job: Δ0 on
# the eigenvectors of H∞ and H(0)): it holds X, W(0) and a already, and one process start-up per pack is saved. With
# one job per run (train.granularity: run) the theory stage's own theory_modes rule writes it.
TRAIN_MODES_INPUT = (
    {"spectrum": PATHS["spectrum"], "eigvecs": PATHS["eigvecs"]} if PACKED else {}
)
TRAIN_MODES_OUTPUT = {"modes": PATHS["theory_modes"]} if PACKED else {}


def train_modes_args(wildcards, input, output):
    """The train CLI's modes options of a packed job ('' with one job per run)."""
    if not PACKED:
        return ""
    return f"--modes-out {output.modes} --spectrum {input.spectrum} --eigvecs {input.eigvecs}"
