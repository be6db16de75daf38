# Stages 4-5, analysis: per-run Parquet files -> one long table and a per-setting summary per dataset; the paper's
# figures and Table 1; the measured verdict on each claim (claims 5-6 from the theory stage's per-run records). Each
# figure is its own target and rebuilds from existing runs without retraining.


localrules:
    aggregate,
    aggregate_all,
    figure,
    fig1,
    table1,
    claims,


rule aggregate:
    """Long table (explicit schema, sorted) and per-setting summary of one dataset's runs."""
    input:
        runs=lambda wc: runs_of(wc.dataset),
        metas=lambda wc: runs_of(wc.dataset, "run_meta"),
        code=stage_code("aggregate"),
    output:
        runs=PATHS["runs_long"],
        summary=PATHS["summary"],
        csv=PATHS["summary_csv"],
    log:
        PATHS["log_aggregate"],
    benchmark:
        PATHS["bench_aggregate"]
    conda:
        "../../envs/analysis.yaml"
    params:
        report_steps=" ".join(str(s) for s in config["analysis"]["report_steps"]),
    shell:
        """
        python -m momentum_ntk.aggregate --runs {input.runs} --out {output.runs} \
            --summary {output.summary} --summary-csv {output.csv} --report-steps {params.report_steps} >{log} 2>&1
        """


rule aggregate_all:
    """Every dataset's long table in one file."""
    input:
        tables=expand(PATHS["runs_long"], dataset=DATASETS),
        code=stage_code("aggregate"),
    output:
        PATHS["all_runs"],
    log:
        PATHS["log_aggregate_all"],
    conda:
        "../../envs/analysis.yaml"
    shell:
        "python -m momentum_ntk.aggregate --concat {input.tables} --out {output} >{log} 2>&1"


rule figure:
    """One per-dataset figure (PDF + PNG) from the aggregated runs."""
    input:
        runs=PATHS["runs_long"],
        code=stage_code("figures"),
    output:
        pdf=PATHS["figure_pdf"],
        png=report(
            PATHS["figure_png"],
            category="Figures",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "figure": "{figure}"},
            caption="../report/figure.rst",
        ),
    log:
        PATHS["log_figure"],
    conda:
        "../../envs/analysis.yaml"
    params:
        subcommand=lambda wc: FIGURES[wc.figure],
    shell:
        """
        python -m momentum_ntk.figures {params.subcommand} --runs {input.runs} --dataset {wildcards.dataset} \
            --pdf {output.pdf} --png {output.png} >{log} 2>&1
        """


rule fig1:
    """Paper Fig. 1: ρ*_NAG(α) on (0, 0.5] with HB's 2 − √2 and the bound (11 − √73)/4."""
    input:
        code=stage_code("figures"),
    output:
        pdf=PATHS["fig1_pdf"],
        png=report(
            PATHS["fig1_png"],
            category="Figures",
            subcategory="theory",
            labels={"dataset": "-", "figure": "fig1_rho_nag"},
            caption="../report/fig1.rst",
        ),
    log:
        PATHS["log_fig1"],
    conda:
        "../../envs/analysis.yaml"
    shell:
        "python -m momentum_ntk.figures fig1 --pdf {output.pdf} --png {output.png} >{log} 2>&1"


rule table1:
    """Paper Table 1 (rates from the high-resolution view) with this run's empirical rates beside them."""
    input:
        summaries=expand(PATHS["summary"], dataset=DATASETS),
        ntk=expand(PATHS["ntk_summary"], dataset=DATASETS),
        code=stage_code("figures"),
    output:
        md=report(
            PATHS["table1_md"],
            category="Tables",
            labels={"table": "Table 1"},
            caption="../report/table1.rst",
        ),
        csv=PATHS["table1_csv"],
    log:
        PATHS["log_table1"],
    conda:
        "../../envs/analysis.yaml"
    shell:
        """
        python -m momentum_ntk.figures table1 --summary {input.summaries} --ntk-summary {input.ntk} \
            --out-md {output.md} --out-csv {output.csv} >{log} 2>&1
        """


rule claims:
    """Verdict (holds / fails / inconclusive) on each of the paper's claims, with the numbers behind it."""
    input:
        summaries=expand(PATHS["summary"], dataset=DATASETS),
        runs=expand(PATHS["runs_long"], dataset=DATASETS),
        ntk=expand(PATHS["ntk_summary"], dataset=DATASETS),
        theory=[runs_of(d, "theory_record") for d in DATASETS],
        preds=[runs_of(d, "theory_pred") for d in DATASETS],
        code=stage_code("claims"),
    output:
        md=report(
            PATHS["claims_md"],
            category="Claims",
            labels={"claims": "verdicts"},
            caption="../report/claims.rst",
        ),
        json=PATHS["claims_json"],
    log:
        PATHS["log_claims"],
    conda:
        "../../envs/analysis.yaml"
    params:
        horizon=config["analysis"]["theory_horizon"],
    shell:
        """
        python -m momentum_ntk.claims --summary {input.summaries} --runs {input.runs} --ntk-summary {input.ntk} \
            --theory {input.theory} --theory-pred {input.preds} --horizon-fraction {params.horizon} \
            --out-md {output.md} --out-json {output.json} >{log} 2>&1
        """


# --- targets: one per figure (each rebuilds from existing runs) ----------------------------------------------------


rule fig2:
    """Training loss, HB vs NAG, one panel per (m, η, β), every dataset (paper Fig. 2 and supplements)."""
    input:
        expand(PATHS["figure_png"], figure="fig2_loss", dataset=DATASETS),


rule fig3:
    """Max distance from initialisation, HB, per width (paper Fig. 3)."""
    input:
        expand(PATHS["figure_png"], figure="fig3_maxdist_hb", dataset=DATASETS),


rule fig4:
    """Max distance from initialisation, NAG, per width (paper Fig. 4)."""
    input:
        expand(PATHS["figure_png"], figure="fig4_maxdist_nag", dataset=DATASETS),


rule fig_width:
    """Final max distance vs width on log-log axes, fitted exponent vs the paper's −1/2."""
    input:
        expand(PATHS["figure_png"], figure="width_scaling", dataset=DATASETS),


rule fig_gram:
    """λmin(H(t))/λ0 over training with Lemma 3's 1/2 line."""
    input:
        expand(PATHS["figure_png"], figure="gram_lambda_min", dataset=DATASETS),


rule all_figures:
    """Every figure and table of the paper, and the claims verdict."""
    input:
        rules.fig1.output,
        rules.fig2.input,
        rules.fig3.input,
        rules.fig4.input,
        rules.fig_width.input,
        rules.fig_gram.input,
        rules.table1.output,
        rules.claims.output,
        PATHS["all_runs"],
