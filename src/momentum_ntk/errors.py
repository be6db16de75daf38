"""One error type for bad input, and the CLI wrapper that turns it into a clear message and a non-zero exit.

A :class:`UserError` is something the user can fix (a missing file, a wrong checksum, a bad config value): its
message names the problem *and* the fix. :func:`write_errno` tells a write that failed for the disk's sake (full,
over quota, read-only) from a bug. The entry points turn both into one clean line and exit status 2
(:mod:`momentum_ntk.entry`).
"""

from __future__ import annotations

import errno


class UserError(Exception):
    """A problem with the input or configuration; the message says what is wrong and how to fix it."""


EXIT_USER_ERROR = 2

# errno of a write that failed for the disk's sake, not the program's: what to do about each.
WRITE_ERRNOS = {
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
    if exc.errno in WRITE_ERRNOS:
        return exc.errno
    text = str(exc)
    return next((code for phrase, code in _WRITE_TEXTS.items() if phrase in text), None)
