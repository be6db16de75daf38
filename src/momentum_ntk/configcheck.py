"""Plan-time check of a config: every problem found before any job, one short line each, naming the key.

The Snakefile runs :func:`problems` on the config as given, before Snakemake fills in the schema's defaults, and
:func:`name_problems` after; any problem stops the workflow with :func:`message`, whose last lines name the keys.
Checked:

- the JSON Schema (workflow/schemas/config.schema.yaml): types, enums, bounds, non-empty lists, unknown keys (with the
  closest known key), each as ``key: what is wrong``, never the schema dump jsonschema prints by default;
- every number is finite: NaN and ±inf pass a JSON Schema bound (NaN compares false with everything), but no key
  means anything with them; every integer fits int64 (the Parquet columns), also under a key without a maximum;
- keys of type integer hold whole numbers: 64.0 is an integer to JSON Schema, not to file names and array shapes;
- values that become part of file names give short names: a β is named by its shortest round-trip positional decimal
  (:func:`momentum_ntk.names.beta_name`), at most :data:`momentum_ntk.names.BETA_NAME_MAX` characters.

Keys are spelled as in the config file: ``grid.betas[0]``. No numpy, no torch: it runs in Snakemake's process.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Sequence
from typing import Any

from momentum_ntk import names, plan

_MAX_LINE = 240  # characters of one problem line; longer values are cut


def key_text(path: Iterable[str | int]) -> str:
    """A config key path as written in the file: ('grid', 'betas', 0) -> 'grid.betas[0]'."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "the config"


def _short(text: str) -> str:
    return text if len(text) <= _MAX_LINE else text[: _MAX_LINE - 1] + "…"


def _schema_line(error: Any) -> str:
    """One jsonschema ValidationError as 'key: what is wrong' (the schema and the instance are left out)."""
    key = key_text(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = list(error.schema.get("properties", {}))
        lines = []
        for name in sorted(set(error.instance) - set(known)):
            close = difflib.get_close_matches(str(name), known, n=1)
            hint = f" (did you mean {key_text([*error.absolute_path, close[0]])}?)" if close else ""
            where = key if error.absolute_path else "the top level"
            lines.append(f"{key_text([*error.absolute_path, str(name)])}: unknown key{hint}; "
                         f"{where} takes {', '.join(known)}")  # fmt: skip
        return "\n".join(lines)
    if error.validator == "minItems" and error.validator_value == 1:
        return f"{key}: is empty; give at least one value"
    return _short(f"{key}: {error.message}")


def schema_problems(config: Any, schema: dict[str, Any]) -> list[str]:
    """Every violation of ``schema`` by ``config``, one line each (several for unknown keys), in key order."""
    from jsonschema import Draft202012Validator

    errors = sorted(Draft202012Validator(schema).iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path])
    return [line for e in errors for line in _schema_line(e).splitlines()]


def nonfinite_problems(config: Any, path: Sequence[str | int] = ()) -> list[str]:
    """Every NaN or ±inf in ``config`` (nested dicts and lists), as 'key: value is not a finite number'."""
    if isinstance(config, float) and not math.isfinite(config):
        return [f"{key_text(path)}: {config} is not a finite number (NaN and ±inf mean nothing here)"]
    if isinstance(config, dict):
        return [p for k, v in config.items() for p in nonfinite_problems(v, [*path, str(k)])]
    if isinstance(config, list):
        return [p for i, v in enumerate(config) for p in nonfinite_problems(v, [*path, i])]
    return []


INT64_MAX = 2**63 - 1  # what the int64 Parquet columns and the JSON records hold


def int64_problems(config: Any, path: Sequence[str | int] = ()) -> list[str]:
    """Every integer in ``config`` outside the int64 range, whatever its key's schema says (a key without a
    ``maximum`` is bounded here): 'key: value does not fit a 64-bit integer'."""
    if isinstance(config, int) and not isinstance(config, bool) and not -INT64_MAX - 1 <= config <= INT64_MAX:
        return [f"{key_text(path)}: {config} does not fit a 64-bit integer (at most {INT64_MAX})"]
    if isinstance(config, dict):
        return [p for k, v in config.items() for p in int64_problems(v, [*path, str(k)])]
    if isinstance(config, list):
        return [p for i, v in enumerate(config) for p in int64_problems(v, [*path, i])]
    return []


def problems(config: Any, schema: dict[str, Any]) -> list[str]:
    """What is wrong with ``config`` as given (before defaults): non-finite numbers, schema violations, integers beyond
    int64, floats where whole numbers are needed. A key is reported once, by the first of these that finds it."""
    bad = nonfinite_problems(config)
    seen = {line.split(":", 1)[0] for line in bad}
    bad += [line for line in schema_problems(config, schema) if line.split(":", 1)[0] not in seen]
    seen |= {line.split(":", 1)[0] for line in bad}
    bad += [line for line in int64_problems(config) if line.split(":", 1)[0] not in seen]
    bad += [f"{line} is not a whole number; write it without a decimal point (e.g. 64, not 64.0)"
            for line in plan.integer_problems(config, schema) if line.split(":", 1)[0] not in seen]  # fmt: skip
    return bad


def name_problems(config: dict[str, Any]) -> list[str]:
    """Values of a validated config (defaults filled in) whose file names would be too long: β beyond
    :data:`momentum_ntk.names.BETA_NAME_MAX` characters (e.g. 1e-300, 302 characters)."""
    bad = []
    for i, beta in enumerate(config["grid"]["betas"]):
        name = names.beta_name(beta)
        if len(name) > names.BETA_NAME_MAX:
            bad.append(
                f"grid.betas[{i}]: {beta!r} would be named '{name[:12]}…' ({len(name)} characters) in file names, "
                f"more than {names.BETA_NAME_MAX}: use a β of at least 1e-6 with at most 17 significant digits, or 0"
            )
    return bad


def message(bad: Sequence[str], configfiles: Sequence[str]) -> str:
    """The error text: what to do first, then one problem per line (last, so the keys end the output)."""
    files = ", ".join(configfiles) or "config.yaml"
    many = len(bad) > 1
    head = (f"config: {len(bad)} problem{'s' if many else ''}, nothing was run. Fix {'them' if many else 'it'} in the "
            f"config file you passed ({files}); workflow/schemas/config.schema.yaml documents every key:")  # fmt: skip
    return "\n".join([head, *(f"  {line}" for line in bad)])
