# Stage 6, theory: what the NTK analysis predicts for every training run, next to what the run measured. Per
# (dataset, width, seed) the initial residual is expanded on the eigenvectors of H∞ and of the run's own H(0) (the one
# n×n job); per run that gives the NTK-linearized loss curves, the high-resolution ODE curves (α from β and the paper's
# α = λ0/2) and the Theorem 1/2 bound (cheap). Figures and a rate table per dataset compare them with the measurement.


localrules:
    theory_predict,
    theory_figure,
    theory_rates_table,


# With packed train jobs (train.granularity: pack) the train job writes the modes file (it holds W(0) already);
# with one job per run, this rule does.
if not PACKED:

    rule theory_modes:
        """Δ0 = f(W(0)) − y on the eigenvectors of H∞ and of the finite-width H(0) for one (dataset, width, seed)."""
        input:
            data=PATHS["data"],
            spectrum=PATHS["spectrum"],
            eigvecs=PATHS["eigvecs"],
        output:
            modes=PATHS["theory_modes"],
        log:
            PATHS["log_theory_modes"],
        benchmark:
            PATHS["bench_theory_modes"]
        # Seconds each (one n×n eigendecomposition): run them as soon as the ntk stage is done, not after all training.
        priority: 10
        conda:
            "../../envs/torch.yaml"
        threads: eigh_threads
        resources:
            gpu=train_gpus(),
            mem_mb=theory_modes_mem_mb,
            runtime=theory_modes_runtime,
        params:
            device=config["train"]["device"],
        shell:
            """
            python -m momentum_ntk.theory modes --data {input.data} --spectrum {input.spectrum} \
                --eigvecs {input.eigvecs} --width {wildcards.width} --seed {wildcards.seed} --device {params.device} \
                --gpus-held {resources.gpu} --threads {threads} --out {output.modes} >{log} 2>&1
            """


rule theory_predict:
    """Linearized (H∞, H(0)), ODE (two α) and theorem-bound loss curves for the runs of one train job (a pack of one
    (dataset, width, seed), or one run) over each run's own iterations (its sidecar's steps), compared with their
    measured loss."""
    input:
        modes=PATHS["theory_modes"],
        summary=PATHS["ntk_summary"],
        runs=job_files("run"),
        metas=job_files("run_meta"),
        code=stage_code("theory"),
    output:
        preds=job_files("theory_pred"),
        records=job_files("theory_record"),
    log:
        PATHS["log_theory_predict"],
    benchmark:
        PATHS["bench_theory_predict"]
    # Above the figures: the last pack's predictions feed the slowest figure (the overlay).
    priority: 2
    conda:
        "../../envs/torch.yaml"
    params:
        methods=job_params(0),
        eta_divisors=job_params(1),
        betas=job_params(2),
        horizon=config["analysis"]["theory_horizon"],
    shell:
        """
        python -m momentum_ntk.theory predict --modes {input.modes} --ntk-summary {input.summary} \
            --method {params.methods} --eta-divisor {params.eta_divisors} --beta {params.betas} \
            --run {input.runs} --horizon-fraction {params.horizon} --out {output.preds} \
            >{log} 2>&1
        """


rule theory_figure:
    """A per-dataset theory figure: measured vs predicted loss, a panel per (m, η, β) and method, seed 0
    (theory_overlay), or the trajectory error sup_{k≤T} ‖u(k) − u_lin(k)‖/‖u(0) − y‖ of the linearized models vs
    width, log-log, with the fitted slope (theory_width_error)."""
    input:
        preds=lambda wc: runs_of(wc.dataset, "theory_pred"),
        records=lambda wc: runs_of(wc.dataset, "theory_record"),
        code=stage_code("theory_report"),
    output:
        pdf=PATHS["theory_figure_pdf"],
        png=report(
            PATHS["theory_figure_png"],
            category="Theory",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "figure": "{theory_figure}"},
            caption="../report/theory_figure.rst",
        ),
    log:
        PATHS["log_theory_figure"],
    # The overlay (a panel per setting and width) is the slowest figure: first, so it does not end the workflow alone.
    priority: lambda wc: 1 if wc.theory_figure == "theory_overlay" else 0
    conda:
        "../../envs/analysis.yaml"
    params:
        subcommand=lambda wc: THEORY_FIGURES[wc.theory_figure],
        horizon=config["analysis"]["theory_horizon"],
    shell:
        """
        python -m momentum_ntk.theory_report {params.subcommand} --pred {input.preds} \
            --horizon-fraction {params.horizon} --pdf {output.pdf} --png {output.png} >{log} 2>&1
        """


rule theory_rates_table:
    """Per setting: measured, linearized, ODE and theorem loss exponents per iteration (Markdown + CSV)."""
    input:
        preds=lambda wc: runs_of(wc.dataset, "theory_pred"),
        records=lambda wc: runs_of(wc.dataset, "theory_record"),
        code=stage_code("theory_report"),
    output:
        md=report(
            PATHS["theory_table_md"],
            category="Theory",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "table": "theory_rates"},
            caption="../report/theory_table.rst",
        ),
        csv=PATHS["theory_table_csv"],
    log:
        PATHS["log_theory_rates_table"],
    conda:
        "../../envs/analysis.yaml"
    params:
        horizon=config["analysis"]["theory_horizon"],
    shell:
        """
        python -m momentum_ntk.theory_report table --pred {input.preds} --horizon-fraction {params.horizon} \
            --out-md {output.md} --out-csv {output.csv} >{log} 2>&1
        """


# --- targets: one per output kind, every dataset ---------------------------------------------------------------------


rule theory_overlay:
    """Measured vs predicted loss curves (linearized H∞/H(0), ODE with both α, theorem bound), every dataset."""
    input:
        expand(
            PATHS["theory_figure_png"],
            theory_figure="theory_overlay",
            dataset=DATASETS,
        ),


rule theory_width_error:
    """Linearization error vs width m with the fitted slope (NTK theory: −1/2), every dataset."""
    input:
        expand(
            PATHS["theory_figure_png"],
            theory_figure="theory_width_error",
            dataset=DATASETS,
        ),


rule theory_table:
    """Rate table per setting (measured, linearized, ODE, theorem), every dataset."""
    input:
        expand(PATHS["theory_table_md"], dataset=DATASETS),


rule all_theory:
    """Every theory overlay, width-error figure and rate table."""
    input:
        rules.theory_overlay.input,
        rules.theory_width_error.input,
        rules.theory_table.input,
