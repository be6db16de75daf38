# Stage 3, training: the grid ⟨method⟩ × m × η × β × seed per dataset. Full batch, square loss, only W trained
# (a fixed), exact recursions of eqs. (3)-(5). Every run writes its own Parquet file and JSON sidecar.
#
# One job trains a pack: every run sharing (dataset, width, seed), hence X and W(0) (train.granularity: pack; with
# `run`, one job per run), and writes the theory modes file of its (dataset, width, seed). On a GPU the pack is one
# batch of (k, d, m) tensors; on a CPU its runs go one after another in the same process. Either way a run's files are byte-identical to the run trained alone, and asking for one run
# file builds its pack. Jobs that will use a GPU carry `gpu=1` and stop when they see no CUDA device; the package's
# device lease gives concurrent jobs distinct GPUs (Snakemake counts GPUs but never assigns device ids).


rule train:
    """A pack of training runs (or one): loss and max_r ‖w_r(t) − w_r(0)‖ every step, the Gram spectrum every K."""
    input:
        **TRAIN_MODES_INPUT,
        data=PATHS["data"],
        summary=PATHS["ntk_summary"],
    output:
        **TRAIN_MODES_OUTPUT,
        runs=job_files("run"),
        metas=job_files("run_meta"),
    log:
        PATHS["log_train"],
    benchmark:
        PATHS["bench_train"]
    # Negative: finished runs' predictions and figures go before more training (see train_priority).
    priority: train_priority
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        gpu=train_gpus(),
        mem_mb=train_mem_mb,
        runtime=train_runtime,
    params:
        methods=job_params(0),
        eta_divisors=job_params(1),
        betas=job_params(2),
        steps=config["train"]["steps"],
        gram_every=config["train"]["gram_every"],
        gram_max_n=config["train"]["gram_max_n"],
        gram_seed=config["train"]["gram_seed"],
        dtype=config["train"]["dtype"],
        device=config["train"]["device"],
        divergence_factor=config["train"]["divergence_factor"],
        engine=config["train"]["engine"],
        modes=train_modes_args,
    shell:
        """
        python -m momentum_ntk.train --data {input.data} --ntk-summary {input.summary} --dataset {wildcards.dataset} \
            --width {wildcards.width} --seed {wildcards.seed} --method {params.methods} \
            --eta-divisor {params.eta_divisors} --beta {params.betas} --steps {params.steps} \
            --gram-every {params.gram_every} --gram-max-n {params.gram_max_n} --gram-seed {params.gram_seed} \
            --dtype {params.dtype} --device {params.device} --gpus-held {resources.gpu} --threads {threads} \
            --divergence-factor {params.divergence_factor} --engine {params.engine} \
            --out {output.runs} --meta {output.metas} \
            {params.modes} >{log} 2>&1
        """


rule all_runs:
    """Every training run of the grid, for every configured dataset."""
    input:
        [runs_of(d) for d in DATASETS],
