"""The entry-point wrapper of every ``python -m momentum_ntk.<stage>``: a :class:`~momentum_ntk.errors.UserError`
becomes ``error: ...`` on stderr and exit status 2; a write that failed because the disk is full or read-only becomes
one line naming the file and the command that finishes the run (:func:`write_error`). Anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import errno
import os
import socket
import sys
from collections.abc import Callable, Sequence

from momentum_ntk import stamp
from momentum_ntk.errors import WRITE_ERRNOS, EXIT_USER_ERROR, UserError, write_errno


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
        what = WRITE_ERRNOS[code]
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
