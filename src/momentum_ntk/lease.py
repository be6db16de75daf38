"""GPU device lease: give each concurrent job its own GPU.

Snakemake counts ``resources: gpu=N`` against ``--resources gpu=K`` but never tells a job *which* GPU to use, so
four training jobs on a four-GPU workstation would all pick ``cuda:0``. :func:`device_lease` closes that gap::

    with device_lease(args.device) as device:       # "auto" | "cpu" | "cuda" | "cuda:<i>"
        model.to(device)
        ...

How it works
------------
* One lock file per visible device in a lock directory (``lock_dir`` argument, else ``$MOMENTUM_NTK_LOCK_DIR``,
  else ``/tmp/momentum-ntk-gpu-locks-<uid>``). A job takes the first device whose file it can lock with
  ``fcntl.flock(LOCK_EX | LOCK_NB)``; N concurrent jobs therefore get N distinct devices.
* The lock belongs to the open file, not to the file's content: when the holder exits, *however* it exits (return,
  exception, SIGKILL, OOM killer, node job kill), the kernel drops the lock and the device is free again. The holder
  also writes its PID, host, start time and SLURM job id into the file, for diagnostics only
  (``python -m momentum_ntk.lease`` lists them); a stale record never blocks anybody.
* More jobs than devices: the extra jobs poll with exponential backoff (50 ms up to 2 s, jittered) until a device
  is free, or raise :class:`LeaseTimeout` after ``timeout`` seconds (``$MOMENTUM_NTK_LEASE_TIMEOUT``; default: wait
  forever, since Snakemake's ``--resources gpu=K`` normally prevents over-subscription in the first place).
* ``CUDA_VISIBLE_DEVICES`` (which SLURM sets for ``--gpus`` jobs) is respected: the lease hands out the *visible*
  indices ``cuda:0 .. cuda:k-1``, but the lock file is keyed by the *physical* device (and the host name), so two
  jobs that see different subsets of the same machine's GPUs collide exactly when they share a physical device. The
  physical key is the GPU's UUID when torch reports it, else the entry of ``CUDA_VISIBLE_DEVICES`` (``"3,5"``: keys
  3 and 5), else the index.
* The number of devices comes from ``torch.cuda.device_count()``; tests (and dry runs) inject it with
  ``$MOMENTUM_NTK_FAKE_GPUS=<k>`` or the ``device_count`` argument.

Caveat: a process forked (without exec) while holding a lease inherits the lock; the device stays leased until the
child exits too, which is right if the child uses the GPU.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import errno
import fcntl
import json
import os
import random
import re
import socket
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from momentum_ntk.entry import cli

from momentum_ntk.errors import UserError

ENV_LOCK_DIR = "MOMENTUM_NTK_LOCK_DIR"
ENV_FAKE_GPUS = "MOMENTUM_NTK_FAKE_GPUS"
ENV_TIMEOUT = "MOMENTUM_NTK_LEASE_TIMEOUT"

_POLL_START_S = 0.05
_POLL_MAX_S = 2.0


class LeaseTimeout(UserError):
    """No device became free within the lease timeout."""


@dataclass(frozen=True)
class Device:
    """One device this process can see: ``index`` for ``cuda:<index>``, ``physical`` for the lock key."""

    index: int
    physical: str

    @property
    def name(self) -> str:
        return f"cuda:{self.index}"


def default_lock_dir() -> Path:
    env = os.environ.get(ENV_LOCK_DIR)
    if env:
        return Path(env)
    return Path(f"/tmp/momentum-ntk-gpu-locks-{os.getuid()}")


def _torch_devices() -> tuple[int, list[str | None]]:
    """(torch.cuda.device_count(), each visible device's UUID or None); (0, []) without a usable CUDA."""
    try:
        import torch
    except ImportError:
        return 0, []
    try:
        if not torch.cuda.is_available():
            return 0, []
        count = int(torch.cuda.device_count())
    except Exception:  # a broken driver counts as no GPU; the job then runs on the CPU ("auto") or fails ("cuda")
        return 0, []
    uuids: list[str | None] = []
    for i in range(count):
        try:
            uuid = getattr(torch.cuda.get_device_properties(i), "uuid", None)
        except Exception:
            uuid = None
        uuids.append(str(uuid) if uuid else None)
    return count, uuids


def _device_count(device_count: int | None) -> tuple[int, list[str | None]]:
    """Number of visible devices and their UUIDs (None where unknown: injected counts, fake GPUs)."""
    if device_count is not None:
        return max(0, int(device_count)), []
    fake = os.environ.get(ENV_FAKE_GPUS)
    if fake not in (None, ""):
        try:
            return max(0, int(fake)), []
        except ValueError:
            raise UserError(f"{ENV_FAKE_GPUS}={fake!r} is not an integer; unset it or give a device count") from None
    return _torch_devices()


def visible_devices(device_count: int | None = None) -> list[Device]:
    """The devices this process may use, in ``cuda:<i>`` order, each with its physical id (the lock key).

    The physical id is the device's UUID when torch reports one: it names the same GPU in every process whatever
    ``CUDA_VISIBLE_DEVICES`` says (SLURM with cgroup-constrained devices sets ``"0"`` in every one-GPU job, for
    different GPUs). Otherwise (injected counts, fake GPUs, old drivers) it comes from ``CUDA_VISIBLE_DEVICES``:
    unset, physical id = index; set (e.g. ``"3,5"``), entry ``i`` is the physical id of ``cuda:i`` (integers,
    ``GPU-<uuid>`` or ``MIG-<uuid>`` alike). CUDA ignores everything from the first invalid entry on, and so does the
    count here (at most as many devices as listed).
    """
    count, uuids = _device_count(device_count)
    cvd = os.environ.get("CUDA_VISIBLE_DEVICES")
    if cvd is None:
        ids = [str(i) for i in range(count)]
    else:
        ids = []
        for raw in cvd.split(","):
            entry = raw.strip()
            if not entry or entry.startswith("-"):  # "" or "-1": no (further) devices
                break
            ids.append(entry)
        count = min(count, len(ids))
    return [Device(i, f"uuid-{uuids[i]}" if i < len(uuids) and uuids[i] else ids[i]) for i in range(count)]


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)


def lock_file(lock_dir: Path, physical: str, host: str | None = None) -> Path:
    """The lock file of one physical device on one host (the host keeps a shared lock dir safe across nodes)."""
    host = host or socket.gethostname()
    return lock_dir / f"{_safe(host)}.gpu-{_safe(physical)}.lock"


def _open_lock(path: Path) -> tuple[int, bool]:
    """Open (creating) a lock file; returns (fd, writable). flock works on a read-only fd too."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666), True
    except PermissionError:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC), False


def _try_lock(path: Path) -> tuple[int, bool] | None:
    """Lock ``path`` exclusively without waiting; return (fd, writable), or None when somebody else holds it."""
    fd, writable = _open_lock(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return None
        raise
    return fd, writable


def _holder_record(device: str | None = None) -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "device": device,
        "argv": " ".join(sys.argv)[:200],
    }


def _write_holder(fd: int, device: str | None = None) -> None:
    data = (json.dumps(_holder_record(device), sort_keys=True) + "\n").encode()
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
    except OSError:  # diagnostics only: a full disk must not fail the job
        pass


def _release(fd: int, writable: bool = True) -> None:
    try:
        if writable:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)  # the record says "free" again; the lock itself is what counts
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _read_record(path: Path) -> dict[str, Any] | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if not text:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return {"raw": text[:200]}


def _is_held(path: Path) -> bool:
    """True when some process holds the lock on ``path`` (probed with a shared, non-blocking lock)."""
    if not path.exists():
        return False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # closing drops the probe lock
    return False


def holders(lock_dir: str | os.PathLike[str] | None = None, device_count: int | None = None) -> list[dict[str, Any]]:
    """One row per visible device: index, physical id, lock file, held (bool) and the last holder's record."""
    ldir = Path(lock_dir) if lock_dir is not None else default_lock_dir()
    rows = []
    for dev in visible_devices(device_count):
        path = lock_file(ldir, dev.physical)
        held = _is_held(path)
        record = _read_record(path)
        rows.append(
            {
                "device": dev.name,
                "physical": dev.physical,
                "lock_file": str(path),
                "held": held,
                "holder": record if held else None,
                "stale_record": record if (record and not held) else None,
            }
        )
    return rows


def _parse_request(requested: str) -> tuple[str, int | None]:
    """-> (kind, index): kind in {"cpu", "auto", "cuda", "other"}; index for "cuda:<i>"."""
    req = (requested or "auto").strip().lower()
    if req in ("cpu", "auto", "cuda"):
        return req, None
    m = re.fullmatch(r"cuda:(\d+)", req)
    if m:
        return "cuda", int(m.group(1))
    if req.isdigit():
        return "cuda", int(req)
    return "other", None


def _timeout_from_env() -> float | None:
    raw = os.environ.get(ENV_TIMEOUT)
    if raw in (None, ""):
        return None
    try:
        value = float(raw)
    except ValueError:
        raise UserError(f"{ENV_TIMEOUT}={raw!r} is not a number of seconds; unset it or give e.g. 600") from None
    return value if value > 0 else None



def check_gpu_held(gpus_held: int, device: str, rule: str) -> None:
    """A job that holds a GPU resource must compute on a GPU: stop instead of silently training on the CPU.

    ``gpus_held`` is the job's Snakemake ``resources.gpu``; ``device`` the resolved torch device; ``rule`` the rule
    name (for the fix). Typical cause: a conda env or pip install that resolved to a CPU-only torch build.
    """
    if gpus_held > 0 and not str(device).startswith("cuda"):
        import torch

        raise UserError(
            f"this {rule} job holds gpu={gpus_held} (Snakemake resources) but would compute on {device!r}: torch "
            f"{torch.__version__} sees no CUDA device (torch.version.cuda={torch.version.cuda}; None means a "
            "CPU-only build). Install a CUDA build of torch (README, 'GPU install') and check with "
            "`python -c 'import torch; print(torch.cuda.is_available())'`, or run on the CPU on purpose (config "
            f"key train.device: cpu): {_cpu_command(rule)}"
        )


def _cpu_command(rule: str) -> str:
    """The snakemake command that reruns with train.device: cpu and no GPU resource for ``rule``, with the config
    that made results/."""
    from momentum_ntk import stamp

    return stamp.command_here("--set-resources", f"{rule}:gpu=0", extra_config={"train": {"device": "cpu"}})

def resolve_device(device: str) -> str:
    """Resolve "auto" to "cuda" when a CUDA device is visible, else "cpu"; "cpu", "cuda", "cuda:<i>" pass through
    (UserError for anything else, or for CUDA when torch sees none). The one device resolver of every stage."""
    import torch

    device = str(device).strip()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device != "cpu" and not device.startswith("cuda"):
        raise UserError(f"device {device!r} is not one of auto, cpu, cuda, cuda:<i>")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(no_cuda_message(device))
    return device


def torch_build() -> str:
    """The installed torch in words: its version and whether it is a CPU-only or a CUDA build."""
    import torch

    cuda = torch.version.cuda
    kind = f"a CUDA {cuda} build" if cuda else "a CPU-only build (torch.version.cuda is None)"
    return f"torch {torch.__version__} here is {kind}"


def no_cuda_message(device: str) -> str:
    """Why ``device`` (cuda, cuda:<i>) cannot be used and what to change: the config key train.device (every stage
    takes its device from it), the torch build, the install fix, or the command that runs on the CPU instead."""
    import torch

    version = torch.__version__.split("+")[0]
    if torch.version.cuda:
        cause = ("but it sees no CUDA device: check the NVIDIA driver (`nvidia-smi`) and CUDA_VISIBLE_DEVICES="
                 f"{os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}, or run on a GPU node")  # fmt: skip
    else:
        cause = ("so it cannot use a GPU: install a CUDA build of the same version, e.g. `pip install "
                 f"torch=={version} --index-url https://download.pytorch.org/whl/cu128` (README, 'GPU install')")
    from momentum_ntk import stamp

    cpu = stamp.command_here(extra_config={"train": {"device": "cpu"}})
    return (
        f"config key train.device is {device!r}, and {torch_build()}, {cause}. Or set train.device: auto (a GPU "
        f"when torch sees one, else the CPU) or cpu in the config, or run on the CPU now: {cpu}"
    )


@contextlib.contextmanager
def job_device(requested: str, gpus_held: int, rule: str) -> Iterator[str]:
    """The device of one workflow job, the one way every stage takes it: resolve ``requested`` (auto | cpu | cuda |
    cuda:<i>), stop a job that holds ``gpus_held`` ≥ 1 GPUs but would compute on the CPU (:func:`check_gpu_held`),
    and lease a CUDA device no concurrent job holds (:func:`device_lease`) for the ``with`` block."""
    resolved = resolve_device(requested)
    check_gpu_held(gpus_held, resolved, rule)
    if resolved == "cpu":
        yield "cpu"
        return
    with device_lease(resolved) as device:
        yield device


@contextlib.contextmanager
def device_lease(
    requested: str = "auto",
    *,
    lock_dir: str | os.PathLike[str] | None = None,
    timeout: float | None = None,
    device_count: int | None = None,
    poll_max_s: float = _POLL_MAX_S,
    quiet: bool = False,
) -> Iterator[str]:
    """Lease one device for the duration of the ``with`` block and yield its torch name.

    ``requested``: ``"auto"`` (a free GPU if any is visible, else ``"cpu"``), ``"cpu"`` (no lock), ``"cuda"`` (a free
    GPU; an error when none is visible) or ``"cuda:<i>"`` (exactly visible device ``i``, waiting for it if busy).
    Any other torch device string (``"mps"``) is passed through without a lock.

    ``timeout``: seconds to wait for a free device before :class:`LeaseTimeout` (default
    ``$MOMENTUM_NTK_LEASE_TIMEOUT``, else wait forever). ``device_count`` overrides ``torch.cuda.device_count()``
    (as does ``$MOMENTUM_NTK_FAKE_GPUS``).
    """
    kind, index = _parse_request(requested)
    if kind == "cpu":
        yield "cpu"
        return
    if kind == "other":
        yield requested.strip()
        return

    devices = visible_devices(device_count)
    if not devices:
        if kind == "auto":
            yield "cpu"
            return
        cvd = os.environ.get("CUDA_VISIBLE_DEVICES")
        raise UserError(
            f"device {requested!r} requested but no CUDA device is visible"
            + (f" (CUDA_VISIBLE_DEVICES={cvd!r})" if cvd is not None else "")
            + "; run on a GPU node / request a GPU (resources: gpu=1), or set train.device to auto or cpu"
        )
    if index is not None:
        if index >= len(devices):
            raise UserError(
                f"device {requested!r} requested but only {len(devices)} CUDA device(s) are visible "
                f"(cuda:0..cuda:{len(devices) - 1}); request 'cuda' or 'auto' to take any free one"
            )
        candidates = [devices[index]]
    else:
        candidates = list(devices)

    ldir = Path(lock_dir) if lock_dir is not None else default_lock_dir()
    try:
        ldir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the GPU lock directory {ldir}: {exc}; set {ENV_LOCK_DIR} to a writable folder")
    if timeout is None:
        timeout = _timeout_from_env()

    start = time.monotonic()
    delay = _POLL_START_S
    announced = False
    rng = random.Random(os.getpid())
    # Start the scan at a pid-dependent offset: jobs that start together then rarely race for the same file.
    offset = os.getpid() % len(candidates)
    order = candidates[offset:] + candidates[:offset]
    while True:
        for dev in order:
            path = lock_file(ldir, dev.physical)
            got = _try_lock(path)
            if got is None:
                continue
            fd, writable = got
            if writable:
                _write_holder(fd, dev.name)
            try:
                yield dev.name
            finally:
                _release(fd, writable)
            return
        waited = time.monotonic() - start
        if timeout is not None and waited >= timeout:
            busy = "; ".join(
                f"{d.name} (physical {d.physical}) held by pid "
                f"{(_read_record(lock_file(ldir, d.physical)) or {}).get('pid', '?')}"
                for d in candidates
            )
            raise LeaseTimeout(
                f"no free GPU after {waited:.1f} s (timeout {timeout:g} s): {busy}; lock dir {ldir}. "
                f"Run fewer GPU jobs at once (snakemake --resources gpu=<number of GPUs>), raise {ENV_TIMEOUT}, "
                f"or inspect the holders with `python -m momentum_ntk.lease --lock-dir {ldir}`"
            )
        if not announced and not quiet:
            print(
                f"lease: all {len(candidates)} requested GPU(s) busy, waiting (lock dir {ldir})",
                file=sys.stderr,
                flush=True,
            )
            announced = True
        sleep = delay * (0.5 + rng.random())
        if timeout is not None:
            sleep = min(sleep, max(0.0, timeout - waited))
        time.sleep(sleep)
        delay = min(delay * 1.5, poll_max_s)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m momentum_ntk.lease",
        description="List the GPU leases on this host: which visible device is held, by which PID / SLURM job.",
    )
    parser.add_argument(
        "--lock-dir", default=None, help=f"lock directory (default ${ENV_LOCK_DIR} or {default_lock_dir()})"
    )
    parser.add_argument("--devices", type=int, default=None, help="device count (default torch.cuda.device_count())")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    rows = holders(args.lock_dir, args.devices)
    if args.json:
        print(json.dumps(rows, indent=2, sort_keys=True))
        return 0
    ldir = args.lock_dir or default_lock_dir()
    if not rows:
        print(f"no CUDA device visible (lock dir {ldir})")
        return 0
    print(f"lock dir {ldir}")
    for row in rows:
        rec = row["holder"] or {}
        if row["held"]:
            state = f"held by pid {rec.get('pid', '?')} on {rec.get('host', '?')} since {rec.get('since', '?')}" + (
                f", SLURM job {rec['slurm_job_id']}" if rec.get("slurm_job_id") else ""
            )
        else:
            stale = row["stale_record"]
            state = "free" + (f" (last holder pid {stale.get('pid', '?')}, exited)" if stale else "")
        print(f"{row['device']:>8}  physical {row['physical']:<12} {state}")
    return 0


if __name__ == "__main__":
    raise SystemExit(cli(main))
