# The config, checked before anything else: the JSON Schema (with defaults filled in) and what it cannot say (finite
# numbers, whole numbers, file names of bounded length). Every problem stops the workflow before any job, one short
# line per key, the keys last (momentum_ntk.configcheck); never the schema dump of a bare `validate`.

import sys
from pathlib import Path

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

sys.path.insert(0, str(Path(workflow.basedir) / "src"))
from momentum_ntk import configcheck, stamp

_SCHEMA = Path(workflow.basedir) / "workflow/schemas/config.schema.yaml"


def _given_configfiles():
    """The config files this run was given (--configfile), else config.yaml, as the user names them."""
    files = [stamp.relative(f) for f in getattr(workflow, "configfiles", None) or []]
    return [f for f in files if f != stamp.DEFAULT_CONFIGFILE] or [
        stamp.DEFAULT_CONFIGFILE
    ]


_PROBLEMS = configcheck.problems(config, yaml.safe_load(_SCHEMA.read_text()))
if _PROBLEMS:
    raise WorkflowError(configcheck.message(_PROBLEMS, _given_configfiles()))

validate(config, "../schemas/config.schema.yaml")  # fills in the schema's defaults

_PROBLEMS = configcheck.name_problems(config)
if _PROBLEMS:
    raise WorkflowError(configcheck.message(_PROBLEMS, _given_configfiles()))
