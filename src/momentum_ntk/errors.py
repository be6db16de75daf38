"""One error type for bad input, and the CLI wrapper that turns it into a clear message and a non-zero exit.

Every ``python -m momentum_ntk.<stage>`` entry point runs through :func:`cli`. A :class:`UserError` is something the
user can fix (a missing file, a wrong checksum, a bad config value): its message names the problem *and* the fix, it is
printed as ``error: ...`` on stderr and the process exits with status 2. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable, Sequence


class UserError(Exception):
    """A problem with the input or configuration; the message says what is wrong and how to fix it."""


EXIT_USER_ERROR = 2


def cli(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Run ``main(argv)``; map :class:`UserError` to a one-paragraph message and exit status 2.

    The first line on stderr says where the job runs (host, SLURM job id, visible GPUs), so every log shows it.
    """
    spec = getattr(sys.modules.get(main.__module__), "__spec__", None)
    stage = spec.name if spec is not None else main.__module__
    print(
        f"[{stage}] host={socket.gethostname()} slurm_job_id={os.environ.get('SLURM_JOB_ID', 'none')} "
        f"cuda_visible_devices={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}",
        file=sys.stderr,
        flush=True,
    )
    try:
        rc = main(argv)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return EXIT_USER_ERROR
    return int(rc or 0)
