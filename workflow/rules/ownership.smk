# One named config per results/ folder. Switching configs (e.g. from the quick preset to config.yaml) in the same
# folder would rebuild the other config's data and NTK outputs under the same paths (params changed) and mix two grids
# in one aggregate. PATHS["config_stamp"] (momentum_ntk.stamp) names the config that produced results/; a run under
# another name warns at plan time and stops before any job; a damaged stamp stops every command, with its own fix.
# Every fix printed here and by the stages carries the --configfile (and --config) that made results/, read from the
# stamp, so it works as typed. Also: a read-only results/, and a full disk after a failed run.

from snakemake.exceptions import WorkflowError

MODE = plan.snakemake_mode(sys.argv)  # run, dryrun, report or inspect
THIS_RUN = stamp.owner_of_run(
    config["name"],
    [str(f) for f in getattr(workflow, "configfiles", None) or []],
    dict(workflow.config_settings.config or {}),
    workflow.main_snakefile,
)
try:
    _OWNER = stamp.read(PATHS["config_stamp"])
except UserError as exc:
    raise WorkflowError(
        f"{exc}: it records which config made results/, and no run may guess it. "
        + stamp.damaged_fix(PATHS["config_stamp"], THIS_RUN)
    )
_FOREIGN = None
if _OWNER is not None and _OWNER.name != config["name"]:
    _FOREIGN = (
        f"results/ in {Path.cwd()} holds the outputs of config '{_OWNER.name}' "
        f"({', '.join(_OWNER.configfiles) or 'unknown files'}), and this run's config is "
        f"'{config['name']}': running would overwrite or mix them. To work on those outputs, pass the config that made "
        f"them, as in `{stamp.command(owner=_OWNER)}` (add your targets). To start '{config['name']}' here, move "
        f"them aside first (the files git tracks in results/ stay): `{stamp.shelve_command()}`"
    )
    print(f"momentum-ntk: {_FOREIGN}", file=sys.stderr)

# A read-only results/ (its disk mounted read-only, or a folder this user may not write): say so before any job, with
# the fix, instead of Snakemake's "write-protected output" or a job's traceback. Dry runs, reports and listings only
# read it.
_UNWRITABLE = plan.unwritable_reason("results") if MODE in ("run", "dryrun") else None
if _UNWRITABLE:
    _READ_ONLY = f"results/ in {Path.cwd()} is read-only: {_UNWRITABLE}; then run again: `{stamp.command(owner=THIS_RUN)}`"
    if MODE == "run":
        raise WorkflowError(_READ_ONLY)
    print(f"momentum-ntk: {_READ_ONLY}", file=sys.stderr)


def write_stamp():
    """Record this run's config in results/.config.json (atomically); a full or read-only disk is one clean line."""
    try:
        stamp.write(THIS_RUN, PATHS["config_stamp"])
    except OSError as exc:
        from momentum_ntk.entry import write_error

        raise WorkflowError(
            str(
                write_error(PATHS["config_stamp"], exc, permission=True)
                or f"{PATHS['config_stamp']}: cannot write it ({exc})"
            )
        )


def disk_problem():
    """After a failed run: one line when results/ sits on a full or read-only disk (the likely cause), with the
    command that finishes the run; None otherwise."""
    unwritable, low = plan.unwritable_reason("results"), plan.low_space("results")
    if not (unwritable or low):
        return None
    cause = (
        f"results/ is read-only: {unwritable}"
        if unwritable
        else f"the disk holding results/ is full ({low}): free space (`df -h results`)"
    )
    return (
        f"{cause}; then finish the run with `{stamp.command(owner=THIS_RUN)}` (finished outputs are kept: every file is "
        "written whole or not at all, and the failed jobs rerun)"
    )


# A run claims a results/ without a stamp at once (onstart runs only when there are jobs, and a complete results/ after
# `rm results/.config.json` has none); every run that starts jobs records its config files and overrides again.
if MODE == "run" and _OWNER is None:
    write_stamp()


onstart:
    if _FOREIGN:
        raise WorkflowError(_FOREIGN)
    write_stamp()


onerror:
    if disk_problem():
        print(f"momentum-ntk: {disk_problem()}", file=sys.stderr)
