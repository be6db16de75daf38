"""Static checks of the per-rule conda envs (envs/*.yaml); conda itself is not needed (nor reachable in CI).

- every env file parses, uses exactly the channels conda-forge + nodefaults, and pins every dependency exactly;
- every pin satisfies the project's requirement in pyproject.toml (conda names mapped to PyPI names), and one
  package has the same pin in every env;
- every rule in workflow/rules/*.smk that runs a command has a `conda:` directive naming an existing env file
  (resolved, as Snakemake does, relative to the .smk file);
- the env of each rule holds every third-party package that the stage it runs (`python -m momentum_ntk.<stage>`)
  imports, following imports inside the package;
- the pins equal the installed versions (the ones the tests ran with); a mismatch is reported as a skip, not a
  failure, since a developer's machine may differ from CI's.
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import re
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
ENVS = ROOT / "envs"
RULES = ROOT / "workflow" / "rules"
PKG = ROOT / "src" / "momentum_ntk"

# conda-forge name -> PyPI distribution name, where they differ.
CONDA_TO_PYPI = {
    "pytorch": "torch",
    "matplotlib-base": "matplotlib",
    "seaborn-base": "seaborn",
    "pyyaml": "pyyaml",
}
# import name -> PyPI distribution name, where they differ.
IMPORT_TO_PYPI = {"yaml": "pyyaml", "torch": "torch", "mpl_toolkits": "matplotlib"}
# Distributions that are always there in a conda env with python (never need a pin of their own).
IMPLICIT = {"pip", "setuptools"}

PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[0-9][A-Za-z0-9.+_-]*)$")


def env_files() -> list[Path]:
    return sorted(ENVS.glob("*.yaml"))


def load_env(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def pins(path: Path) -> dict[str, str]:
    """{conda name: version} of one env file (its dependencies must all be plain strings)."""
    out = {}
    for dep in load_env(path)["dependencies"]:
        m = PIN.match(str(dep).replace(" ", ""))
        assert m, f"{path.name}: {dep!r} is not pinned exactly as NAME==VERSION"
        out[m["name"].lower()] = m["version"]
    return out


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def project_requirements() -> dict[str, Requirement]:
    reqs = [Requirement(r) for r in project()["dependencies"]]
    return {canonicalize_name(r.name): r for r in reqs}


def pypi_name(conda_name: str) -> str:
    return canonicalize_name(CONDA_TO_PYPI.get(conda_name, conda_name))


# --- the env files themselves ---------------------------------------------------------------------------------------


def test_expected_env_files_exist():
    names = {p.stem for p in env_files()}
    assert {"data", "torch", "analysis"} <= names, f"envs/ has {sorted(names)}"


@pytest.mark.parametrize("path", env_files(), ids=lambda p: p.name)
def test_env_file_shape(path: Path):
    env = load_env(path)
    assert isinstance(env, dict), f"{path.name} is not a YAML mapping"
    assert env.get("channels") == [
        "conda-forge",
        "nodefaults",
    ], f"{path.name}: channels must be conda-forge, nodefaults"
    deps = env.get("dependencies")
    assert isinstance(deps, list) and deps, f"{path.name}: no dependencies"
    assert all(isinstance(d, str) for d in deps), f"{path.name}: a `pip:` section or a non-string entry; use conda only"
    names = pins(path)
    assert "python" in names, f"{path.name}: pin python"
    assert len(names) == len(deps), f"{path.name}: a package is listed twice"


@pytest.mark.parametrize("path", env_files(), ids=lambda p: p.name)
def test_pins_satisfy_pyproject(path: Path):
    reqs = project_requirements()
    for name, version in pins(path).items():
        if name == "python":
            spec = SpecifierSet(project()["requires-python"])
            assert Version(version) in spec, f"{path.name}: python=={version} outside requires-python {spec}"
            continue
        pypi = pypi_name(name)
        assert (
            pypi in reqs
        ), f"{path.name}: {name} (PyPI {pypi}) is not a dependency in pyproject.toml; add it there or drop it here"
        spec = reqs[pypi].specifier
        assert spec.contains(
            Version(version), prereleases=True
        ), f"{path.name}: {name}=={version} does not satisfy pyproject.toml's {reqs[pypi]}"


def test_same_package_same_pin_everywhere():
    seen: dict[str, tuple[str, str]] = {}
    for path in env_files():
        for name, version in pins(path).items():
            key = pypi_name(name)
            if key in seen:
                assert seen[key][0] == version, f"{key}: {seen[key][1]} pins {seen[key][0]}, {path.name} pins {version}"
            else:
                seen[key] = (version, path.name)


def test_pins_equal_installed_versions():
    mismatches = []
    for path in env_files():
        for name, version in pins(path).items():
            if name == "python":
                installed = ".".join(map(str, sys.version_info[:3]))
            else:
                try:
                    installed = Version(md.version(pypi_name(name))).public  # 2.13.0+cpu -> 2.13.0
                except md.PackageNotFoundError:
                    installed = "not installed"
            if installed != version:
                mismatches.append(f"{path.name}: {name}=={version}, installed {installed}")
    if mismatches:
        pytest.skip("env pins differ from this machine's packages (fine off CI): " + "; ".join(mismatches))


# --- the rules ------------------------------------------------------------------------------------------------------

RULE_HEAD = re.compile(r"^(?P<indent>[ \t]*)(?:rule|checkpoint)\s+(?P<name>\w+)\s*:", re.M)
DIRECTIVE = re.compile(r"^[ \t]+(?P<key>\w+)\s*:(?P<rest>.*)$")
EXECUTING = {"shell", "script", "notebook", "wrapper", "cwl"}


def parse_rules() -> list[dict]:
    """Every rule of workflow/rules/*.smk (and the Snakefile): name, file, directives, conda value, shell text."""
    files = sorted(RULES.glob("*.smk"))
    for snakefile in (ROOT / "Snakefile", ROOT / "workflow" / "Snakefile"):
        if snakefile.exists():
            files.append(snakefile)
    rules = []
    for smk in files:
        lines = smk.read_text().splitlines()
        heads = [(i, m) for i, line in enumerate(lines) if (m := RULE_HEAD.match(line))]
        for i, m in heads:
            indent = len(m["indent"].expandtabs())
            body = []
            for line in lines[i + 1 :]:
                if line.strip() and len(line) - len(line.lstrip()) <= indent:
                    break
                body.append(line)
            directives: dict[str, str] = {}
            key = None
            block_indent = None
            for line in body:
                if not line.strip():
                    continue
                d = DIRECTIVE.match(line)
                here = len(line) - len(line.lstrip())
                if d and (block_indent is None or here == block_indent):
                    block_indent = here
                    key = d["key"]
                    directives[key] = d["rest"].strip()
                elif key is not None:
                    directives[key] += "\n" + line.strip()
            rules.append({"name": m["name"], "file": smk, "directives": directives})
    return rules


def executing_rules() -> list[dict]:
    return [r for r in parse_rules() if EXECUTING & set(r["directives"])]


def conda_path(rule: dict) -> Path | None:
    value = rule["directives"].get("conda", "")
    lit = re.search(r"""["']([^"']+\.ya?ml)["']""", value)
    if not lit:
        return None
    return (rule["file"].parent / lit.group(1)).resolve()


def test_rules_found():
    if not RULES.is_dir() or not list(RULES.glob("*.smk")):
        pytest.skip("no workflow/rules/*.smk yet")
    assert executing_rules(), "no rule with a shell/script directive found in workflow/rules/*.smk"


def test_no_run_directive_rules():
    """`run:` rules cannot have a conda env; every rule must call a stage through `shell:` (or `script:`)."""
    offenders = [f"{r['file'].name}:{r['name']}" for r in parse_rules() if "run" in r["directives"]]
    assert not offenders, f"rules with run: (cannot use conda:): {offenders}"


@pytest.mark.parametrize("rule", executing_rules(), ids=lambda r: r["name"])
def test_every_rule_has_an_existing_conda_env(rule: dict):
    where = f"{rule['file'].relative_to(ROOT)}: rule {rule['name']}"
    assert "conda" in rule["directives"], f"{where} has no conda: directive (use one of envs/*.yaml)"
    path = conda_path(rule)
    assert path is not None, f"{where}: conda: {rule['directives']['conda']!r} is not a quoted path to a .yaml file"
    assert path.is_file(), f"{where}: conda env {path} does not exist (paths are relative to the .smk file)"
    assert path.parent == ENVS.resolve(), f"{where}: conda env {path} is not in envs/"


# --- each env holds what its stages import -----------------------------------------------------------------------


def _optional_import_nodes(tree: ast.AST) -> set[int]:
    """ids of import nodes inside `try: ... except ImportError` (optional imports need no env entry)."""
    optional: set[int] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Try):
            continue
        caught = set()
        for handler in node.handlers:
            types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
            caught |= {t.id for t in types if isinstance(t, ast.Name)}
        if caught & {"ImportError", "ModuleNotFoundError"}:
            for stmt in node.body:
                optional |= {id(n) for n in ast.walk(stmt) if isinstance(n, (ast.Import, ast.ImportFrom))}
    return optional


def _imports(module: str, seen: set[str]) -> set[str]:
    """Top-level third-party import names of momentum_ntk.<module>, following imports inside the package."""
    if module in seen:
        return set()
    seen.add(module)
    path = PKG / f"{module}.py"
    if not path.exists():
        return set()
    out: set[str] = set()
    tree = ast.parse(path.read_text())
    optional = _optional_import_nodes(tree)
    for node in ast.walk(tree):
        if id(node) in optional:
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # from . import x / from .x import y
                base = node.module.split(".")[0] if node.module else None
                subs = [base] if base else [a.name for a in node.names]
                for sub in subs:
                    out |= _imports(sub, seen)
                continue
            names = [node.module or ""]
            if node.module == "momentum_ntk":
                for a in node.names:
                    out |= _imports(a.name, seen)
                continue
        for name in names:
            top, _, rest = name.partition(".")
            if top == "momentum_ntk":
                if rest:
                    out |= _imports(rest.split(".")[0], seen)
            elif top and top not in sys.stdlib_module_names and top != "__future__":
                out.add(top)
    return out


def stage_rules() -> list[tuple[dict, str]]:
    found = []
    for rule in executing_rules():
        for stage in re.findall(r"python3?\s+-m\s+momentum_ntk\.(\w+)", rule["directives"].get("shell", "")):
            found.append((rule, stage))
    return found


@pytest.mark.parametrize("rule_stage", stage_rules(), ids=lambda rs: f"{rs[0]['name']}-{rs[1]}")
def test_env_holds_stage_imports(rule_stage):
    rule, stage = rule_stage
    if not (PKG / f"{stage}.py").exists():
        pytest.skip(f"src/momentum_ntk/{stage}.py not written yet")
    path = conda_path(rule)
    if path is None or not path.is_file():
        pytest.skip("rule has no valid conda env (reported by test_every_rule_has_an_existing_conda_env)")
    have = {pypi_name(n) for n in pins(path)}
    missing = sorted(
        f"{name} (PyPI {canonicalize_name(IMPORT_TO_PYPI.get(name, name))})"
        for name in _imports(stage, set())
        if canonicalize_name(IMPORT_TO_PYPI.get(name, name)) not in have
    )
    assert not missing, f"rule {rule['name']} runs momentum_ntk.{stage}, which imports {missing}; add to {path.name}"
