# momentum-ntk: HB vs NAG on over-parameterized two-layer ReLU networks (Liu et al.), reproduced end to end.
#
#   snakemake --cores 8 --resources gpu=4                                # the whole paper
#   snakemake --cores all --configfile workflow/presets/quick.yaml       # offline, minutes on a 2-core CPU
#   snakemake --list-target-rules                                        # every stage and figure as a target
#
# Stages: fetch -> binarize -> ntk -> train (grid) -> aggregate -> figures / claims / theory.


from snakemake.utils import min_version

min_version("9.0")


# The report's front page (`snakemake --report report.html`): stages, where to start, the categories.
report: "workflow/report/workflow.rst"


configfile: "config.yaml"


include: "workflow/rules/config.smk"  # the schema and what it cannot say, before anything else
include: "workflow/rules/common.smk"  # the package on sys.path, the shell prefix
include: "workflow/rules/datasets.smk"
include: "workflow/rules/grid.smk"  # the grid and its jobs (packs or runs)
include: "workflow/rules/paths.smk"  # every output, log and benchmark path
include: "workflow/rules/jobs.smk"  # the files and parameters of a pack (or run)
include: "workflow/rules/resources.smk"
include: "workflow/rules/ownership.smk"  # one named config per results/


wildcard_constraints:
    dataset="|".join(ALL_DATASETS),
    method="|".join(method_names()),  # the optimizers of momentum_ntk.methods
    width=r"\d+",
    eta_divisor=r"\d+",
    beta=r"0\.\d+|0",  # plan.beta_name: positional decimals, never exponents
    seed=r"\d+",
    figure="|".join(FIGURES),
    theory_figure="|".join(THEORY_FIGURES),


include: "workflow/rules/data.smk"
include: "workflow/rules/ntk.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/analysis.smk"
include: "workflow/rules/theory.smk"


rule all:
    default_target: True
    input:
        rules.all_data.input,
        rules.all_ntk.input,
        rules.all_runs.input,
        rules.all_figures.input,
        rules.all_theory.input,


include: "workflow/rules/report.smk"  # a --report run: every figure and table it shows must exist
