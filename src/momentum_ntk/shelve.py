"""Move the outputs in ``results/`` aside, keeping the files git tracks there (``results/README.md``) in place.

    python -m momentum_ntk.shelve                  # to results-<name of the config that made them>/
    python -m momentum_ntk.shelve results-old      # to a folder of your choice (it must not exist yet)

The fix the workflow prints when a run's config is not the one that made ``results/`` (a config switch): after it,
``results/`` holds only its tracked files and the new config starts there, and the old outputs are whole in the
other folder, with their stamp. A plain
``mv results results-<name>`` would take the tracked ``results/README.md`` along. Nothing is overwritten: the target
folder must not exist. Standard library only.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from momentum_ntk import stamp
from momentum_ntk.entry import cli
from momentum_ntk.errors import UserError

RESULTS = Path("results")
FALLBACK_TRACKED = {"results/README.md"}  # what git tracks in results/ (.gitignore), when git cannot say


def tracked_files(folder: Path = RESULTS) -> set[str]:
    """Paths (``results/...``, POSIX) of the files git tracks in ``folder``; outside a git work tree, or without
    git, the files this repository tracks there (:data:`FALLBACK_TRACKED`)."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--", str(folder)], capture_output=True, check=True,
                             timeout=60).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return set(FALLBACK_TRACKED)
    files = {f for f in out.decode().split("\0") if f}
    return files or set(FALLBACK_TRACKED)


def _move_untracked(src: Path, dst: Path, tracked: set[str]) -> list[str]:
    """Move every entry of ``src`` into ``dst`` except tracked files; a folder holding tracked files is entered and
    its other entries moved. Returns the moved paths."""
    moved: list[str] = []
    dst.mkdir(parents=True, exist_ok=False)
    for entry in sorted(src.iterdir()):
        rel = entry.as_posix()
        if rel in tracked:
            continue
        if entry.is_dir() and not entry.is_symlink() and any(t.startswith(rel + "/") for t in tracked):
            moved += _move_untracked(entry, dst / entry.name, tracked)
            continue
        shutil.move(str(entry), str(dst / entry.name))
        moved.append(rel)
    return moved


def shelve(dest: str | None = None, folder: Path = RESULTS) -> tuple[Path, list[str], list[str]]:
    """Move ``folder``'s untracked entries to ``dest`` (default ``results-<owner's name>``). Returns (dest, moved,
    kept). UserError when there is nothing to move or ``dest`` exists."""
    if not folder.is_dir():
        raise UserError(f"{folder}/ does not exist in {Path.cwd()}: there is nothing to move aside")
    if dest is None:
        try:
            owner = stamp.read(folder / ".config.json")
        except UserError as exc:
            raise UserError(f"{exc}, so the config's name is unknown: name the folder yourself, e.g. "
                            f"`{stamp.shelve_command('results-old')}`") from None  # fmt: skip
        dest = f"results-{owner.name}" if owner else "results-old"
    target = Path(dest)
    if target.exists() or target.is_symlink():
        raise UserError(f"{target} exists already, nothing was moved: name another folder, e.g. "
                        f"`{stamp.shelve_command(str(target) + '-2')}`")  # fmt: skip
    if target.resolve().is_relative_to(folder.resolve()):
        raise UserError(f"{target} lies inside {folder}/: name a folder beside it, e.g. results-old")
    tracked = tracked_files(folder)
    kept = sorted(t for t in tracked if Path(t).exists())
    if not [e for e in folder.iterdir() if e.as_posix() not in tracked]:
        raise UserError(f"{folder}/ holds only tracked files ({', '.join(kept) or 'none'}): nothing to move aside")
    moved = _move_untracked(folder, target, tracked)
    return target, moved, kept


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m momentum_ntk.shelve", description=__doc__.split("\n\n")[0])
    ap.add_argument("dest", nargs="?", help="folder to move the outputs to (default: results-<config name>)")
    args = ap.parse_args(argv)
    target, moved, kept = shelve(args.dest)
    print(f"moved {len(moved)} entries of {RESULTS}/ to {target}/ (kept in place, tracked by git: "
          f"{', '.join(kept) or 'nothing'}); {RESULTS}/ is free for another config")
    return 0


if __name__ == "__main__":
    raise SystemExit(cli(main))
