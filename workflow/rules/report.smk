# `snakemake --report` shows what exists and builds nothing: included after rule all, this stops a report run before
# Snakemake's "marked for report but does not exist" when a figure or table it shows is missing (e.g. a dataset that
# became available offline since the last full run), naming the files and the command that makes them.

from snakemake.io import is_flagged


def check_report_inputs(targets):
    """In a --report run, stop when a file of ``targets`` (the default target's inputs, rule all) that some rule
    marks for the report does not exist; also when results/ holds another config's outputs.
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


check_report_inputs(rules.all.input)
