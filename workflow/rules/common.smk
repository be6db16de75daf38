# Helpers shared by every rule file: the dataset list, path templates, the grid and the command prefix.
# Rules stay thin: each calls one stage of the package in src/momentum_ntk/ as `python -m momentum_ntk.<stage>`.

import shutil
from pathlib import Path

# --- how rules reach the package -------------------------------------------------------------------------------
# Snakemake strips PYTHONPATH from conda jobs and builds envs from a copy, so the path to src/ is set inside each
# shell command (never through an inherited variable or `pip: -e .`).
SRC = Path(workflow.basedir) / "src"
PY = f"PYTHONPATH='{SRC}' python"
# First line of every log: where the job ran (a SLURM job shows its SLURM_JOB_ID).
WHERE = 'echo "host=$(hostname) slurm_job_id=${SLURM_JOB_ID:-none} cuda_visible_devices=${CUDA_VISIBLE_DEVICES:-unset}"'

# --- datasets ------------------------------------------------------------------------------------------------------
ALL_DATASETS = ["mnist", "fmnist", "cifar10", "mnist5k"]
DEBIAN_FMNIST = Path("/usr/share/datasets/fashion-mnist")
# Training-split size of the two default classes and input dimension, for resource estimates before any data exists.
FULL_SHAPES = {"mnist": (12665, 784), "fmnist": (12000, 784), "cifar10": (10000, 3072), "mnist5k": (1000, 784)}


def source_of(dataset):
    return config["data"]["sources"].get(dataset, "auto")


def local_path_of(dataset):
    return config["data"]["paths"].get(dataset)


def available_offline(dataset):
    """True when a dataset's raw files are at hand without a download (for `optional_datasets`)."""
    path = local_path_of(dataset)
    if path:
        return Path(path).exists()
    if dataset == "mnist5k":
        return True
    if dataset == "fmnist" and source_of(dataset) in ("auto", "debian") and DEBIAN_FMNIST.is_dir():
        return True
    return Path(config["data"]["cache_dir"], dataset, "manifest.json").exists()


DATASETS = list(config["datasets"]) + [
    d for d in config["optional_datasets"] if d not in config["datasets"] and available_offline(d)
]


def n_instances(dataset):
    n, _ = FULL_SHAPES[dataset]
    cap = config["data"]["max_per_class"]
    return n if cap is None else min(n, 2 * cap)


# --- path templates (the only place output paths are spelled) ------------------------------------------------------
RUN = "{dataset}/{method}/m{width}_c{eta_divisor}_b{beta}_s{seed}"
PATHS = {
    "manifest": "resources/raw/{dataset}/manifest.json",
    "data": "results/data/{dataset}.npz",
    "data_record": "results/data/{dataset}.json",
    "spectrum": "results/ntk/{dataset}/spectrum.parquet",
    "ntk_summary": "results/ntk/{dataset}/summary.json",
    "eigvecs": "results/ntk/{dataset}/eigvecs.npy",
    "finite_width": "results/ntk/{dataset}/finite_width.parquet",
    "spectrum_plot": "results/ntk/{dataset}/spectrum.png",
    "run": f"results/runs/{RUN}.parquet",
    "run_meta": f"results/runs/{RUN}.json",
    "logs": "results/logs",
}


wildcard_constraints:
    dataset="|".join(ALL_DATASETS),
    method="gd|hb|nag",
    width=r"\d+",
    eta_divisor=r"\d+",
    beta=r"0\.\d+|0",
    seed=r"\d+",


def fmt_beta(beta):
    """β as it appears in file names: 0.97 -> '0.97' (shortest round-trip form)."""
    return f"{float(beta):g}"


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


# --- devices -------------------------------------------------------------------------------------------------------
def train_gpus():
    """gpu=1 for train jobs that will use a GPU: device cuda, or auto on a machine that has one."""
    device = config["train"]["device"]
    if device == "cuda":
        return 1
    if device == "auto":
        return int(shutil.which("nvidia-smi") is not None or Path("/dev/nvidia0").exists())
    return 0


def train_mem_mb(wildcards):
    """Peak memory of one train job: X in float64 and in the compute dtype, ~6 d×m and ~3 n×m buffers, Gram tracking
    on at most gram_max_n rows, plus ~600 MB for the interpreter and torch."""
    n, d = n_instances(wildcards.dataset), FULL_SHAPES[wildcards.dataset][1]
    m = int(wildcards.width)
    s = 8 if config["train"]["dtype"] == "float64" else 4
    g = min(n, config["train"]["gram_max_n"])
    total = n * d * (8 + s) + 6 * d * m * s + 3 * n * m * s + 4 * g * g * 8
    return 600 + int(total / 2**20)


def ntk_mem_mb(wildcards):
    """H∞ built in place (one n×n float64 buffer), the eigen-solver's workspace and eigenvectors: ~4 n² doubles."""
    n = n_instances(wildcards.dataset)
    return 600 + int(4 * n * n * 8 / 2**20)
