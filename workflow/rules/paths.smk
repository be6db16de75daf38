# Every file the workflow writes, spelled once: PATHS maps a name to its path template (outputs, then each rule's
# log as log_<rule>, then each compute rule's benchmark as bench_<rule>). Rules name files only through PATHS. It is
# built in one expression and read-only afterwards (a later `PATHS[...] = ...` raises TypeError). Also here: the
# figure names that fill the {figure} and {theory_figure} wildcards.

import types

# A training run: dataset, method, width m, η = 1/(c·λm), momentum β and seed.
RUN = "{dataset}/{method}/m{width}_c{eta_divisor}_b{beta}_s{seed}"
# One log and one benchmark per job: the train and theory-prediction jobs are keyed by their pack (dataset, width,
# seed) with train.granularity: pack (grid.smk), or by their run.
_TRAIN_JOB = "{dataset}/m{width}_s{seed}" if PACKED else RUN
_PREDICT_JOB = "{dataset}/predict_m{width}_s{seed}" if PACKED else RUN
# Downloads are cached once per machine, outside results/ (data.cache_dir).
_MANIFEST = str(Path(config["data"]["cache_dir"], "{dataset}", "manifest.json"))

PATHS = types.MappingProxyType(
    {
        # --- outputs ---
        "manifest": _MANIFEST,
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
        # Which named config produced results/ (config key `name`): written when a run starts, checked by every run
        # (ownership.smk).
        "config_stamp": "results/.config.json",
        # --- logs: one per job ---
        "log_fetch": "results/logs/fetch/{dataset}.log",
        "log_binarize": "results/logs/binarize/{dataset}.log",
        "log_ntk": "results/logs/ntk/{dataset}.log",
        "log_train": f"results/logs/train/{_TRAIN_JOB}.log",
        "log_theory_modes": "results/logs/theory/{dataset}/modes_m{width}_s{seed}.log",
        "log_theory_predict": f"results/logs/theory/{_PREDICT_JOB}.log",
        "log_aggregate": "results/logs/aggregate/{dataset}.log",
        "log_aggregate_all": "results/logs/aggregate/all.log",
        "log_figure": "results/logs/figures/{figure}_{dataset}.log",
        "log_fig1": "results/logs/figures/fig1.log",
        "log_table1": "results/logs/figures/table1.log",
        "log_claims": "results/logs/claims.log",
        "log_theory_figure": "results/logs/figures/{theory_figure}_{dataset}.log",
        "log_theory_rates_table": "results/logs/figures/theory_rates_{dataset}.log",
        # --- benchmarks: Snakemake's `benchmark:` of the compute rules, one TSV per job (wall time, max RSS, I/O),
        # keyed like the job's log; nothing consumes them ---
        "bench_fetch": "results/benchmarks/fetch/{dataset}.tsv",
        "bench_binarize": "results/benchmarks/binarize/{dataset}.tsv",
        "bench_ntk": "results/benchmarks/ntk/{dataset}.tsv",
        "bench_train": f"results/benchmarks/train/{_TRAIN_JOB}.tsv",
        "bench_theory_modes": "results/benchmarks/theory/{dataset}/modes_m{width}_s{seed}.tsv",
        "bench_theory_predict": f"results/benchmarks/theory/{_PREDICT_JOB}.tsv",
        "bench_aggregate": "results/benchmarks/aggregate/{dataset}.tsv",
    }
)

# Per-dataset figures: name in file paths ({figure}) -> `python -m momentum_ntk.figures <subcommand>`.
FIGURES = {
    "fig2_loss": "fig2",
    "fig3_maxdist_hb": "fig3",
    "fig4_maxdist_nag": "fig4",
    "width_scaling": "width",
    "gram_lambda_min": "gram",
}

# Per-dataset theory figures: name in file paths ({theory_figure}) -> `python -m momentum_ntk.theory_report
# <subcommand>`.
THEORY_FIGURES = {
    "theory_overlay": "overlay",
    "theory_width_error": "width",
}
