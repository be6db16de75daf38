# Stage 3, training: one job per grid point ⟨method⟩ × m × η × β × seed and dataset. Full batch, square loss, only W
# trained (a fixed), exact recursions of eqs. (3)-(5). Every run writes its own Parquet file and JSON sidecar, so any
# single run can be rebuilt alone. Jobs that will use a GPU carry `gpu=1`; the package's device lease gives
# concurrent jobs distinct GPUs (Snakemake counts GPUs but never assigns device ids).


rule train:
    """One training run: loss and max_r ‖w_r(t) − w_r(0)‖ every step, the finite-width Gram spectrum every K steps."""
    input:
        data=PATHS["data"],
        summary=PATHS["ntk_summary"],
    output:
        run=PATHS["run"],
        meta=PATHS["run_meta"],
    log:
        f"results/logs/train/{RUN}.log",
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        gpu=train_gpus(),
        mem_mb=train_mem_mb,
    params:
        steps=config["train"]["steps"],
        gram_every=config["train"]["gram_every"],
        gram_max_n=config["train"]["gram_max_n"],
        gram_seed=config["train"]["gram_seed"],
        dtype=config["train"]["dtype"],
        device=config["train"]["device"],
        divergence_factor=config["train"]["divergence_factor"],
    shell:
        """
        python -m momentum_ntk.train --data {input.data} --ntk-summary {input.summary} --dataset {wildcards.dataset} \
            --method {wildcards.method} --width {wildcards.width} --eta-divisor {wildcards.eta_divisor} \
            --beta {wildcards.beta} --seed {wildcards.seed} --steps {params.steps} \
            --gram-every {params.gram_every} --gram-max-n {params.gram_max_n} --gram-seed {params.gram_seed} \
            --dtype {params.dtype} --device {params.device} --threads {threads} \
            --divergence-factor {params.divergence_factor} --out {output.run} --meta {output.meta} >{log} 2>&1
        """


rule all_runs:
    """Every training run of the grid, for every configured dataset."""
    input:
        [runs_of(d) for d in DATASETS],
