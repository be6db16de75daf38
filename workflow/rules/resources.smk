# What each job asks of the scheduler: GPUs, threads, memory (mem_mb), wall-time limits (runtime, minutes, SLURM's -t)
# and the train jobs' priority, all from the dataset's size and the config (momentum_ntk.plan counts the FLOP and
# bytes). Also the plan-time warning when the paper's grid would train on a host without a GPU.


def train_gpus():
    """gpu=1 for train jobs that will use a GPU: device cuda, or auto on a machine with an NVIDIA driver."""
    device = config["train"]["device"]
    return int(device == "cuda" or (device == "auto" and plan.gpu_present()))


def _n_d(wildcards):
    n = plan.n_instances(wildcards.dataset, config["data"]["max_per_class"])
    return n, plan.FULL_SHAPES[wildcards.dataset][1]


# --- train jobs ----------------------------------------------------------------------------------------------------
def _train_job(wildcards):
    """plan.TrainJob of one train job (a pack or one run) from its wildcards and the config, on the engine
    train.engine picks for it (a packed job also holds W(0) for its theory modes)."""
    n, d = _n_d(wildcards)
    m = int(wildcards.width)
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


# --- the other jobs ------------------------------------------------------------------------------------------------
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


def theory_modes_mem_mb(wildcards):
    """H(0) and its eigendecomposition (~4 n² doubles, as the ntk stage) plus the n×m activation pattern."""
    return (
        ntk_mem_mb(wildcards)
        + plan.n_instances(wildcards.dataset, config["data"]["max_per_class"])
        * int(wildcards.width)
        * 8
        // 2**20
    )


# Wall-time limits (minutes, SLURM's -t) of the other non-local jobs, from the dataset's size: plan.py counts their
# FLOP (the n×n eigendecompositions scale as n³) at a pessimistic 10 GFLOP/s, plus 10 minutes of start-up; every
# limit is at least plan.RUNTIME_FLOOR_MIN. The local rules need none (they never go to SLURM).
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
