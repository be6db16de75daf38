"""One error type for bad input, and the CLI wrapper that turns it into a clear message and a non-zero exit.

Every ``python -m momentum_ntk.<stage>`` entry point runs through :func:`cli`. A :class:`UserError` is something the
user can fix (a missing file, a wrong checksum, a bad config value): its message names the problem *and* the fix, it is
printed as ``error: ...`` on stderr and the process exits with status 2. A file that cannot be written because the disk
is full or read-only is such an error too (:func:`write_error`: one line naming the file and the command that finishes
the run). Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import os
import socket
import sys
from collections.abc import Callable, Sequence


class UserError(Exception):
    """A problem with the input or configuration; the message says what is wrong and how to fix it."""


EXIT_USER_ERROR = 2

# errno of a write that failed for the disk's sake, not the program's: what to do about each.
_WRITE_ERRNOS = {
    errno.ENOSPC: "no space left on device: free space on that disk (`df -h` shows it)",
    errno.EDQUOT: "disk quota exceeded: free space or raise your quota",
    errno.EROFS: "read-only file system: remount it read-write or move the workflow to a writable disk",
    errno.EFBIG: "file too large for this file system: move the workflow to another disk",
}
# the same, as pyarrow and other C++ libraries word them (their OSError often has no errno)
_WRITE_TEXTS = {
    "No space left on device": errno.ENOSPC,
    "Disk quota exceeded": errno.EDQUOT,
    "Read-only file system": errno.EROFS,
}


def write_errno(exc: BaseException) -> int | None:
    """The errno of ``exc`` when it is a write that failed for lack of space, a quota or a read-only file system
    (ENOSPC, EDQUOT, EROFS, EFBIG, also when only the message says so); else None."""
    if not isinstance(exc, OSError):
        return None
    if exc.errno in _WRITE_ERRNOS:
        return exc.errno
    text = str(exc)
    return next((code for phrase, code in _WRITE_TEXTS.items() if phrase in text), None)


def write_error(
    path: str | os.PathLike[str] | None, exc: BaseException, *, permission: bool = False
) -> UserError | None:
    """A UserError for a failed write of ``path``: the cause, what to do about it and the command that finishes the
    run (the workflow's incomplete jobs rerun, finished outputs are kept: every output is written whole or not at
    all). ``permission``: also EACCES/EPERM (a folder the user may not write). None when ``exc`` is no such error."""
    code = write_errno(exc)
    if code is None and permission and isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EPERM):
        what = "permission denied: make it writable (`chmod -R u+w results`) or run as its owner"
    elif code is None:
        return None
    else:
        what = _WRITE_ERRNOS[code]
    from momentum_ntk import stamp

    where = path if path is not None else getattr(exc, "filename", None) or "an output file"
    return UserError(
        f"{where}: cannot write it, {what}; then finish the run with {stamp.command_here()} (finished outputs are "
        "kept: every file is written whole or not at all)"
    )


def cli(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Run ``main(argv)``; map :class:`UserError` to a one-paragraph message and exit status 2.

    The first line on stderr says where the job runs (host, SLURM job id, visible GPUs), so every log shows it.
    """
    spec = getattr(sys.modules.get(main.__module__), "__spec__", None)
    stage = spec.name if spec is not None else main.__module__
    _say(
        f"[{stage}] host={socket.gethostname()} slurm_job_id={os.environ.get('SLURM_JOB_ID', 'none')} "
        f"cuda_visible_devices={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}"
    )
    try:
        rc = main(argv)
    except UserError as exc:
        _say(f"error: {exc}")
        return EXIT_USER_ERROR
    except OSError as exc:  # a full or read-only disk outside io.atomic_path (which names the file itself)
        err = write_error(None, exc)
        if err is None:
            raise
        _say(f"error: {err}")
        return EXIT_USER_ERROR
    return int(rc or 0)


def _say(text: str) -> None:
    """One line on stderr; a log on a full disk cannot take it, which must not turn the exit status into a crash."""
    try:
        print(text, file=sys.stderr, flush=True)
    except OSError:
        pass
