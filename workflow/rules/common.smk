# Helpers shared by all stages of the workflow: the dataset list, path templates, the grid, the shell prefix.
# Rules stay thin: each calls one stage of the package in src/momentum_ntk/ as `python -m momentum_ntk.<stage>`.

import itertools
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.io import is_flagged

# --- how rules reach the package -------------------------------------------------------------------------------
# Snakemake strips PYTHONPATH from conda jobs and builds envs from a copy, so the path to src/ is exported inside
# every shell command (never inherited, never `pip: -e .`). The same package answers plan-time questions below.
SRC = Path(workflow.basedir) / "src"
sys.path.insert(0, str(SRC))
from momentum_ntk import names, plan, stamp
from momentum_ntk.errors import UserError
from momentum_ntk.methods import names as method_names

shell.prefix(f"set -euo pipefail; export PYTHONPATH='{SRC}'; ")

# --- datasets ------------------------------------------------------------------------------------------------------
ALL_DATASETS = list(plan.FULL_SHAPES)


def source_of(dataset):
    return config["data"]["sources"].get(dataset, "auto")


def local_path_of(dataset):
    return config["data"]["paths"].get(dataset)


DATASETS = list(config["datasets"]) + [
    d
    for d in config["optional_datasets"]
    if d not in config["datasets"]
    and plan.available_offline(
        d, source_of(d), local_path_of(d), config["data"]["cache_dir"]
    )
]


# --- path templates (the only place output paths are spelled) ------------------------------------------------------
RUN = "{dataset}/{method}/m{width}_c{eta_divisor}_b{beta}_s{seed}"
PATHS = {
    "manifest": str(Path(config["data"]["cache_dir"], "{dataset}", "manifest.json")),
    "data": "results/data/{dataset}.npz",
    "data_record": "results/data/{dataset}.json",
    "spectrum": "results/ntk/{dataset}/spectrum.parquet",
    "ntk_summary": "results/ntk/{dataset}/summary.json",
    "eigvecs": "results/ntk/{dataset}/eigvecs.npy",
    "finite_width": "results/ntk/{dataset}/finite_width.parquet",
    "spectrum_plot": "results/ntk/{dataset}/spectrum.png",
    "run": f"results/runs/{RUN}.parquet",
    "run_meta": f"results/runs/{RUN}.json",
    "runs_long": "results/aggregate/{dataset}/runs.parquet",
    "summary": "results/aggregate/{dataset}/summary.parquet",
    "summary_csv": "results/aggregate/{dataset}/summary.csv",
    "all_runs": "results/aggregate/all_runs.parquet",
    "figure_pdf": "results/figures/{figure}_{dataset}.pdf",
    "figure_png": "results/figures/{figure}_{dataset}.png",
    "fig1_pdf": "results/figures/fig1_rho_nag.pdf",
    "fig1_png": "results/figures/fig1_rho_nag.png",
    "table1_md": "results/figures/table1.md",
    "table1_csv": "results/figures/table1.csv",
    "claims_md": "results/claims.md",
    "claims_json": "results/claims.json",
    "theory_modes": "results/theory/{dataset}/modes_m{width}_s{seed}.parquet",
    "theory_pred": f"results/theory/{RUN}.parquet",
    "theory_record": f"results/theory/{RUN}.json",
    "theory_figure_pdf": "results/figures/{theory_figure}_{dataset}.pdf",
    "theory_figure_png": "results/figures/{theory_figure}_{dataset}.png",
    "theory_table_md": "results/figures/theory_rates_{dataset}.md",
    "theory_table_csv": "results/figures/theory_rates_{dataset}.csv",
}

# Which named config produced results/ (config key `name`): written when a run starts, checked by every run.
PATHS["config_stamp"] = "results/.config.json"

# Per-dataset figures: name in file paths -> `python -m momentum_ntk.figures <subcommand>`.
FIGURES = {
    "fig2_loss": "fig2",
    "fig3_maxdist_hb": "fig3",
    "fig4_maxdist_nag": "fig4",
    "width_scaling": "width",
    "gram_lambda_min": "gram",
}

# Per-dataset theory figures: name in file paths -> `python -m momentum_ntk.theory_report <subcommand>`.
THEORY_FIGURES = {
    "theory_overlay": "overlay",
    "theory_width_error": "width",
}


def fmt_beta(beta):
    """β as it appears in file names: the shortest decimal that reads back exactly (0.97 -> '0.97')."""
    return names.beta_name(beta)


GRID = dict(
    method=config["grid"]["methods"],
    width=config["grid"]["widths"],
    eta_divisor=config["grid"]["eta_divisors"],
    beta=[fmt_beta(b) for b in config["grid"]["betas"]],
    seed=config["grid"]["seeds"],
)


def runs_of(dataset, template="run"):
    """Every run file (or sidecar) of the grid for one dataset."""
    return expand(PATHS[template], dataset=dataset, **GRID)


# --- code as an input of the cheap stages ----------------------------------------------------------------------------
# Editing a module in src/ reruns, on the next run, the analysis jobs whose code imports it (aggregation, figures,
# tables, claims, theory predictions): their source files are inputs, and a newer input makes a job rerun. The
# expensive stages (binarize, ntk, train, theory_modes) never rerun on a code change; force them with
# `snakemake --forcerun <rule>` (README, "When something goes wrong").
def stage_code(module):
    """src/momentum_ntk/<module>.py and every package module it imports (plan.stage_sources)."""
    return plan.stage_sources(SRC, module)


# --- jobs: a pack of runs (default) or one run ----------------------------------------------------------------------
# A pack is every run that shares (dataset, width, seed), hence X and W(0): the grid's methods × η × β. One train job
# and one theory-prediction job per pack (train.granularity: pack), or per run (train.granularity: run); the files
# are the same either way. Asking for one run file builds its whole pack.
PACKED = config["train"]["granularity"] == "pack"
PACK_RUNS = list(
    itertools.product(GRID["method"], GRID["eta_divisor"], GRID["beta"])
)  # (method, c, β), in order
PATHS["train_log"] = (
    "results/logs/train/{dataset}/m{width}_s{seed}.log"
    if PACKED
    else f"results/logs/train/{RUN}.log"
)
PATHS["theory_log"] = (
    "results/logs/theory/{dataset}/predict_m{width}_s{seed}.log"
    if PACKED
    else f"results/logs/theory/{RUN}.log"
)
# Snakemake's `benchmark:` of the compute rules: one TSV per job (wall time, max RSS, I/O); nothing consumes them.
# Keyed like the job's log: train and theory_predict per pack or per run.
PATHS["bench_fetch"] = "results/benchmarks/fetch/{dataset}.tsv"
PATHS["bench_binarize"] = "results/benchmarks/binarize/{dataset}.tsv"
PATHS["bench_ntk"] = "results/benchmarks/ntk/{dataset}.tsv"
PATHS["bench_train"] = (
    "results/benchmarks/train/{dataset}/m{width}_s{seed}.tsv"
    if PACKED
    else f"results/benchmarks/train/{RUN}.tsv"
)
PATHS["bench_theory_modes"] = (
    "results/benchmarks/theory/{dataset}/modes_m{width}_s{seed}.tsv"
)
PATHS["bench_theory_predict"] = (
    "results/benchmarks/theory/{dataset}/predict_m{width}_s{seed}.tsv"
    if PACKED
    else f"results/benchmarks/theory/{RUN}.tsv"
)
PATHS["bench_aggregate"] = "results/benchmarks/aggregate/{dataset}.tsv"


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


# --- resources ----------------------------------------------------------------------------------------------------
def train_gpus():
    """gpu=1 for train jobs that will use a GPU: device cuda, or auto on a machine with an NVIDIA driver."""
    device = config["train"]["device"]
    return int(device == "cuda" or (device == "auto" and plan.gpu_present()))


def _train_job(wildcards):
    """plan.TrainJob of one train job (a pack or one run) from its wildcards and the config, on the engine
    train.engine picks for it (a packed job also holds W(0) for its theory modes)."""
    n = plan.n_instances(wildcards.dataset, config["data"]["max_per_class"])
    d, m = plan.FULL_SHAPES[wildcards.dataset][1], int(wildcards.width)
    engine = plan.choose_engine(config["train"]["engine"], n, d, m)
    return plan.TrainJob(
        n=n,
        d=d,
        m=m,
        runs=len(job_runs(wildcards)),
        steps=config["train"]["steps"],
        dtype_bytes=8 if config["train"]["dtype"] == "float64" else 4,
        gram_rows=min(n, config["train"]["gram_max_n"]),
        gpu=bool(train_gpus()),
        engine=engine,
        w0_on_host=engine == "direct" or PACKED,
    )


# A packed train job also writes the theory modes file of its (dataset, width, seed) (theory.modes_of_job: Δ0 on
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


def train_mem_mb(wildcards):
    """Host memory of one train job (MiB): one run's buffers at a time on a CPU, the data on a GPU job's host; a
    packed job adds the theory modes' n×n eigendecomposition (ntk_mem_mb)."""
    return _train_job(wildcards).mem_mb() + (ntk_mem_mb(wildcards) if PACKED else 0)


def train_priority(wildcards):
    """Scheduling order of train jobs, below every other job (analysis of finished runs goes first): one dataset
    after another, and within a dataset the costliest pack first (longest-processing-time order). The first
    dataset's theory and figure jobs then overlap the next dataset's training, and the last packs to start are the
    shortest ones, so the cores finish together. Values lie in (-len(DATASETS) - 1, -1).
    """
    # a pack's cost relative to the dataset's costliest one: same n, d, runs and steps, so the ratio of widths
    share = int(wildcards.width) / max(int(w) for w in config["grid"]["widths"])
    return -1.0 - DATASETS.index(wildcards.dataset) - (1.0 - share) * 0.99


def train_runtime(wildcards):
    """Wall-time limit of one train job (minutes, SLURM's -t): the pack's FLOP at a pessimistic rate, plus start-up,
    plus a packed job's theory modes (the theory_modes job's limit)."""
    return _train_job(wildcards).runtime_min() + (
        theory_modes_runtime(wildcards) if PACKED else 0
    )


# --- plan-time warning: the paper's grid on a host without a GPU -------------------------------------------------------
_CPU_HOURS = plan.grid_cpu_hours(config)
if config["train"]["device"] != "cpu" and not plan.gpu_present() and _CPU_HOURS > 1:
    print(
        f"momentum-ntk: no GPU on this host, so the training grid of this config will run on the CPU: about "
        f"{_CPU_HOURS:.0f} CPU-hours (benchmarks/cost.py prices it). On a GPU host run `snakemake --cores 8 "
        f"--resources gpu=<number of GPUs>` with a CUDA build of torch (README, 'GPU install'); on a SLURM cluster "
        f"`snakemake --profile profiles/slurm` asks for gpu=1 per train job. For minutes on a CPU: "
        f"--configfile workflow/presets/quick.yaml. To run on the CPU on purpose, set train.device: cpu.",
        file=sys.stderr,
    )


def eigh_threads(wildcards):
    """Threads of an n×n eigendecomposition job: 2 where LAPACK gains from them (n ≥ 2000), else 1 (seconds each;
    two such jobs side by side finish sooner than one after another on two threads)."""
    return (
        2
        if plan.n_instances(wildcards.dataset, config["data"]["max_per_class"]) >= 2000
        else 1
    )


def ntk_mem_mb(wildcards):
    return plan.ntk_mem_mb(
        plan.n_instances(wildcards.dataset, config["data"]["max_per_class"])
    )


# Wall-time limits (minutes, SLURM's -t) of the other non-local jobs, from the dataset's size: plan.py counts their
# FLOP (the n×n eigendecompositions scale as n³) at a pessimistic 10 GFLOP/s, plus 10 minutes of start-up; every
# limit is at least plan.RUNTIME_FLOOR_MIN. The local rules need none (they never go to SLURM).
def _n_d(wildcards):
    n = plan.n_instances(wildcards.dataset, config["data"]["max_per_class"])
    return n, plan.FULL_SHAPES[wildcards.dataset][1]


def binarize_runtime(wildcards):
    return plan.binarize_runtime_min(*_n_d(wildcards))


def ntk_runtime(wildcards):
    n, d = _n_d(wildcards)
    return plan.ntk_runtime_min(
        n,
        d,
        [int(m) for m in config["grid"]["widths"]],
        gap_rows=min(n, config["ntk"]["gap_max_n"]),
        gram_rows=min(n, config["train"]["gram_max_n"]),
    )


def theory_modes_runtime(wildcards):
    return plan.theory_modes_runtime_min(*_n_d(wildcards), int(wildcards.width))


# --- one named config per results/ folder ----------------------------------------------------------------------------
# Switching configs (e.g. from the quick preset to config.yaml) in the same folder would rebuild the other config's
# data and NTK outputs under the same paths (params changed) and mix two grids in one aggregate. results/.config.json
# (momentum_ntk.stamp) names the config that produced results/; a run under another name warns at plan time and
# stops before any job; a damaged stamp stops every command, with its own fix. Every fix printed here and by the
# stages carries the --configfile (and --config) that made results/, read from the stamp, so it works as typed.
MODE = plan.snakemake_mode(sys.argv)  # run, dryrun, report or inspect
THIS_RUN = stamp.owner_of_run(
    config["name"],
    [str(f) for f in getattr(workflow, "configfiles", None) or []],
    dict(workflow.config_settings.config or {}),
    workflow.main_snakefile,
)
try:
    _OWNER = stamp.read(PATHS["config_stamp"])
except UserError as exc:
    raise WorkflowError(
        f"{exc}: it records which config made results/, and no run may guess it. "
        + stamp.damaged_fix(PATHS["config_stamp"], THIS_RUN)
    )
_FOREIGN = None
if _OWNER is not None and _OWNER.name != config["name"]:
    _FOREIGN = (
        f"results/ in {Path.cwd()} holds the outputs of config '{_OWNER.name}' "
        f"({', '.join(_OWNER.configfiles) or 'unknown files'}), and this run's config is "
        f"'{config['name']}': running would overwrite or mix them. To work on those outputs, pass the config that made "
        f"them, as in `{stamp.command(owner=_OWNER)}` (add your targets). To start '{config['name']}' here, move "
        f"them aside first (the files git tracks in results/ stay): `{stamp.shelve_command()}`"
    )
    print(f"momentum-ntk: {_FOREIGN}", file=sys.stderr)

# A read-only results/ (its disk mounted read-only, or a folder this user may not write): say so before any job, with
# the fix, instead of Snakemake's "write-protected output" or a job's traceback. Dry runs, reports and listings only
# read it.
_UNWRITABLE = plan.unwritable_reason("results") if MODE in ("run", "dryrun") else None
if _UNWRITABLE:
    _READ_ONLY = f"results/ in {Path.cwd()} is read-only: {_UNWRITABLE}; then run again: `{stamp.command(owner=THIS_RUN)}`"
    if MODE == "run":
        raise WorkflowError(_READ_ONLY)
    print(f"momentum-ntk: {_READ_ONLY}", file=sys.stderr)


def write_stamp():
    """Record this run's config in results/.config.json (atomically); a full or read-only disk is one clean line."""
    try:
        stamp.write(THIS_RUN, PATHS["config_stamp"])
    except OSError as exc:
        from momentum_ntk.errors import write_error

        raise WorkflowError(
            str(
                write_error(PATHS["config_stamp"], exc, permission=True)
                or f"{PATHS['config_stamp']}: cannot write it ({exc})"
            )
        )


def disk_problem():
    """After a failed run: one line when results/ sits on a full or read-only disk (the likely cause), with the
    command that finishes the run; None otherwise."""
    unwritable, low = plan.unwritable_reason("results"), plan.low_space("results")
    if not (unwritable or low):
        return None
    cause = (
        f"results/ is read-only: {unwritable}"
        if unwritable
        else f"the disk holding results/ is full ({low}): free space (`df -h results`)"
    )
    return (
        f"{cause}; then finish the run with `{stamp.command(owner=THIS_RUN)}` (finished outputs are kept: every file is "
        "written whole or not at all, and the failed jobs rerun)"
    )


# A run claims a results/ without a stamp at once (onstart runs only when there are jobs, and a complete results/ after
# `rm results/.config.json` has none); every run that starts jobs records its config files and overrides again.
if MODE == "run" and _OWNER is None:
    write_stamp()


onstart:
    if _FOREIGN:
        raise WorkflowError(_FOREIGN)
    write_stamp()


onerror:
    if disk_problem():
        print(f"momentum-ntk: {disk_problem()}", file=sys.stderr)


# --- `snakemake --report`: it shows what exists and builds nothing ----------------------------------------------------
def check_report_inputs(targets):
    """In a --report run, stop before Snakemake's "marked for report but does not exist" when a figure or table the
    report shows is missing (e.g. a dataset that became available offline since the last full run), naming the files
    and the command that makes them. ``targets``: the default target's inputs (rule all).
    """
    if MODE != "report":
        return
    if _FOREIGN:  # a report of another config's outputs under this config's name
        raise WorkflowError(_FOREIGN)
    patterns = [
        f.regex() for r in workflow.rules for f in r.output if is_flagged(f, "report")
    ]
    files = [str(f) for f in targets]
    shown = [f for f in files if any(rx.fullmatch(f) for rx in patterns)]
    missing = [f for f in shown if not Path(f).exists()]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise WorkflowError(
            f"the report shows every figure and table of config '{config['name']}', and {len(missing)} of "
            f"{len(shown)} do not exist yet: {', '.join(missing[:3])}{more} (a report builds nothing). Make them "
            f"first: `{stamp.command(owner=THIS_RUN)}`, then run the same --report command again."
        )
