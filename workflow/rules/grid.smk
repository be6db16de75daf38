# The training grid of this config (GRID: methods × widths × η divisors × β × seeds) and how its runs form jobs
# (PACKED): a pack of runs (default) or one run per job. jobs.smk expands them into files.


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


# A pack is every run that shares (dataset, width, seed), hence X and W(0): the grid's methods × η × β. One train job
# and one theory-prediction job per pack (train.granularity: pack), or per run (train.granularity: run); the files
# are the same either way. Asking for one run file builds its whole pack.
PACKED = config["train"]["granularity"] == "pack"
