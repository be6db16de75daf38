"""Which config made ``results/``: the ownership stamp ``results/.config.json``, and fix commands that fit it.

``results/`` belongs to one named config at a time (config key ``name``). The workflow writes the stamp when a run
starts (``onstart`` in workflow/rules/ownership.smk) and every run reads it at plan time: a run under another name stops
before any job. The same record lets an error message print a fix that works when typed literally, with the
``--configfile`` (and ``--config``) that made ``results/``: :func:`command`, e.g.
``snakemake --force results/runs/mnist5k/hb/m64_c10_b0.9_s0.parquet --configfile workflow/presets/tiny.yaml``.

A stamp that is there but damaged (truncated, edited, not this format) is an error with its own fix
(:func:`damaged_fix`), never skipped: skipping it would let another config overwrite the outputs it protects.

Standard library only: plan time (the Snakefile) and ``python -m momentum_ntk.shelve`` import it without numpy.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from momentum_ntk.errors import UserError

STAMP = Path("results") / ".config.json"  # relative to the workflow's working directory (where jobs run)
DEFAULT_CONFIGFILE = "config.yaml"  # the Snakefile's `configfile:`, read by every run: never needs naming
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # the schema's pattern of `name`


@dataclass(frozen=True)
class Owner:
    """The config that made ``results/``: its ``name``, the config files of that run (as given, relative to the
    working directory when inside it), its ``--config`` overrides and the Snakefile when it is not ``./Snakefile``."""

    name: str
    configfiles: tuple[str, ...] = ()
    config: dict[str, Any] = field(default_factory=dict)
    snakefile: str | None = None

    def record(self) -> dict[str, Any]:
        """The stamp's JSON object (``config`` and ``snakefile`` only when set, so a plain run's stamp keeps the
        two keys it always had)."""
        rec: dict[str, Any] = {"name": self.name, "configfiles": list(self.configfiles)}
        if self.config:
            rec["config"] = self.config
        if self.snakefile:
            rec["snakefile"] = self.snakefile
        return rec

    def args(self, extra_config: dict[str, Any] | None = None) -> list[str]:
        """Command-line arguments that select this config: ``-s`` when needed, ``--configfile`` (config.yaml, always
        read, left out) and ``--config`` overrides merged with ``extra_config``."""
        out: list[str] = []
        if self.snakefile:
            out += ["-s", self.snakefile]
        files = [f for f in self.configfiles if f != DEFAULT_CONFIGFILE]
        if files:
            out += ["--configfile", *files]
        config = _merged(self.config, extra_config or {})
        if config:
            out += ["--config", *(f"{key}={json.dumps(value)}" for key, value in config.items())]
        return out


def _merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``extra``, nested dicts merged key by key (as Snakemake merges ``--config``)."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merged(out[key], value)
        else:
            out[key] = value
    return out


def damaged_fix(path: str | os.PathLike[str] = STAMP, this: Owner | None = None) -> str:
    """What to type when the stamp is damaged: remove it when ``results/`` is the outputs of ``this`` run's config
    (the run writes it anew), else move the outputs aside first (:mod:`momentum_ntk.shelve`)."""
    mine = f"config '{this.name}'" if this else "the config you are running"
    return (
        f"If results/ holds the outputs of {mine}, remove the damaged stamp and run again (the run writes it anew): "
        f"`rm {shlex.quote(str(path))} && {command(owner=this)}`. If another config made them, move them aside first: "
        f"`{shelve_command('results-old')}`"
    )


def read(path: str | os.PathLike[str] = STAMP) -> Owner | None:
    """The owner recorded in ``path``; None when there is no stamp (a fresh ``results/``). A stamp that cannot be
    read, is not JSON, or lacks a valid ``name`` is a :class:`UserError` naming the file (the caller adds the fix)."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError) as exc:  # truncated, empty, binary: JSONDecodeError, UnicodeDecodeError
        raise UserError(f"{path} is damaged ({type(exc).__name__}: {exc})") from None
    if not isinstance(rec, dict):
        raise UserError(f"{path} is damaged (JSON {type(rec).__name__}, not an object)")
    name, files = rec.get("name"), rec.get("configfiles", [])
    config, snakefile = rec.get("config", {}), rec.get("snakefile")
    problems = []
    if not isinstance(name, str) or not _NAME.match(name):
        problems.append(f"'name' is {name!r}, not a config name")
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        problems.append(f"'configfiles' is {files!r}, not a list of paths")
    if not isinstance(config, dict):
        problems.append(f"'config' is {config!r}, not an object")
    if snakefile is not None and not isinstance(snakefile, str):
        problems.append(f"'snakefile' is {snakefile!r}, not a path")
    if problems:
        raise UserError(f"{path} is damaged ({'; '.join(problems)})")
    return Owner(name, tuple(files), config, snakefile)


def write(owner: Owner, path: str | os.PathLike[str] = STAMP) -> None:
    """Write the stamp atomically (a temporary file moved into place): a kill or a full disk never leaves half a
    stamp, which the next run would have to refuse."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(owner.record(), indent=2) + "\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def relative(path: str | os.PathLike[str], base: str | os.PathLike[str] | None = None) -> str:
    """``path`` relative to ``base`` (default: the working directory) when inside it, else absolute: how a command
    typed in the working directory names it."""
    p = Path(path).resolve()
    b = Path(base or Path.cwd()).resolve()
    return str(p.relative_to(b)) if p.is_relative_to(b) else str(p)


def owner_of_run(name: str, configfiles: list[str], config: dict[str, Any], snakefile: str) -> Owner:
    """The Owner of this Snakemake run: its config files and Snakefile as a command typed in the working directory
    names them (``-s`` only when the Snakefile is not ``./Snakefile``)."""
    files = tuple(relative(f) for f in configfiles)
    sf = relative(snakefile)
    return Owner(name, files, dict(config), None if sf == "Snakefile" else sf)


def command(*args: str, owner: Owner | None = None, extra_config: dict[str, Any] | None = None) -> str:
    """``snakemake <args> <owner's config arguments>``, quoted for a POSIX shell: typed literally in the working
    directory it passes the foreign-config guard. Without an owner, only ``args`` (and ``extra_config``)."""
    rest = owner.args(extra_config) if owner else Owner("-").args(extra_config)
    return shlex.join(["snakemake", *args, *rest])


def command_here(*args: str, extra_config: dict[str, Any] | None = None, path: str | os.PathLike[str] = STAMP) -> str:
    """The fix command for the ``results/`` of the working directory, in backticks: with the stamp's config when
    there is a readable stamp, else with a note to add the ``--configfile`` of the run."""
    try:
        owner = read(path)
    except UserError:
        owner = None
    text = f"`{command(*args, owner=owner, extra_config=extra_config)}`"
    return text if owner is not None else f"{text} (with the --configfile you ran with)"


def shelve_command(dest: str | None = None) -> str:
    """The command that moves ``results/`` aside but keeps its tracked files in place (:mod:`momentum_ntk.shelve`).
    ``python`` is the one the README's virtual environment provides, with the package installed."""
    return shlex.join(["python", "-m", "momentum_ntk.shelve", *([dest] if dest else [])])
