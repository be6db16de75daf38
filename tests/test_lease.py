"""GPU lease (momentum_ntk.lease) on the CPU with simulated devices (MOMENTUM_NTK_FAKE_GPUS).

Holders are real processes, so the tests exercise the kernel's flock semantics: distinct devices for concurrent
jobs, release on SIGKILL, waiting when there are more jobs than devices, and physical-id keys under
CUDA_VISIBLE_DEVICES.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from momentum_ntk import lease
from momentum_ntk.errors import UserError

SRC = Path(__file__).resolve().parents[1] / "src"

# A holder: lease a device, print it, then hold it until a line arrives on stdin (or stdin closes).
HOLDER = textwrap.dedent("""
    import sys
    from momentum_ntk.errors import UserError
    from momentum_ntk.lease import device_lease
    timeout = float(sys.argv[2]) if len(sys.argv) > 2 else None
    try:
        with device_lease(sys.argv[1], timeout=timeout) as dev:
            print(dev, flush=True)
            sys.stdin.readline()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    """)

# A timed job: wait for the lease, hold it for `hold` seconds, print {device, start, end} as JSON.
TIMED = textwrap.dedent("""
    import json, sys, time
    from momentum_ntk.lease import device_lease
    with device_lease("auto", timeout=60, poll_max_s=0.1) as dev:
        t0 = time.time()
        time.sleep(float(sys.argv[1]))
        t1 = time.time()
    print(json.dumps({"device": dev, "start": t0, "end": t1}), flush=True)
    """)


@pytest.fixture
def lock_env(tmp_path, monkeypatch):
    """A private lock dir and a clean device environment, for this process and its children."""
    ldir = tmp_path / "locks"
    monkeypatch.setenv(lease.ENV_LOCK_DIR, str(ldir))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv(lease.ENV_TIMEOUT, raising=False)
    monkeypatch.setenv(lease.ENV_FAKE_GPUS, "2")
    return ldir


def _env(**extra: str | None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SRC) + os.pathsep + env.get("PYTHONPATH", "")
    for key, value in extra.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


class Holder:
    """A child process holding one lease until released (or killed)."""

    def __init__(self, requested: str = "auto", timeout: float | None = None, **env: str | None):
        args = [sys.executable, "-c", HOLDER, requested] + ([str(timeout)] if timeout is not None else [])
        self.proc = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(**env)
        )
        self.device: str | None = None

    def wait_device(self, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        line = self.proc.stdout.readline()  # blocks until the lease is granted (or the child dies)
        if not line:
            err = self.proc.stderr.read()
            raise AssertionError(f"holder exited without a device (rc={self.proc.wait()}): {err}")
        assert time.monotonic() < deadline + 5
        self.device = line.strip()
        return self.device

    def release(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("\n")
            self.proc.stdin.flush()
        self.proc.wait(timeout=30)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def close(self) -> None:
        self.kill()
        for fh in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            fh.close()


@pytest.fixture
def holders():
    started: list[Holder] = []

    def start(*args, **kwargs) -> Holder:
        h = Holder(*args, **kwargs)
        started.append(h)
        return h

    yield start
    for h in started:
        h.close()


# --- in-process behaviour -------------------------------------------------------------------------------------------


def test_cpu_requested_takes_no_lock(lock_env):
    with lease.device_lease("cpu") as dev:
        assert dev == "cpu"
    assert not lock_env.exists()


def test_auto_without_gpus_is_cpu(lock_env, monkeypatch):
    monkeypatch.setenv(lease.ENV_FAKE_GPUS, "0")
    with lease.device_lease("auto") as dev:
        assert dev == "cpu"


def test_cuda_without_gpus_is_a_user_error(lock_env, monkeypatch):
    monkeypatch.setenv(lease.ENV_FAKE_GPUS, "0")
    with pytest.raises(UserError, match="no CUDA device is visible"):
        with lease.device_lease("cuda"):
            pass


def test_cuda_index_out_of_range(lock_env):
    with pytest.raises(UserError, match="only 2 CUDA device"):
        with lease.device_lease("cuda:2"):
            pass


def test_nested_leases_in_one_process_are_distinct_and_released(lock_env):
    with lease.device_lease("auto") as a, lease.device_lease("auto") as b:
        assert {a, b} == {"cuda:0", "cuda:1"}
        rows = {r["device"]: r for r in lease.holders()}
        assert rows["cuda:0"]["held"] and rows["cuda:1"]["held"]
        assert rows["cuda:0"]["holder"]["pid"] == os.getpid()
        with pytest.raises(lease.LeaseTimeout, match="no free GPU"):
            with lease.device_lease("auto", timeout=0.2, quiet=True):
                pass
    assert not any(r["held"] for r in lease.holders())
    with lease.device_lease("cuda:1") as c:  # a specific device once it is free
        assert c == "cuda:1"


def test_lease_released_on_exception(lock_env):
    with pytest.raises(RuntimeError):
        with lease.device_lease("cuda:0"):
            raise RuntimeError("boom")
    with lease.device_lease("cuda:0", timeout=0.5) as dev:
        assert dev == "cuda:0"


def test_visible_devices_parsing(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert [(d.index, d.physical) for d in lease.visible_devices(2)] == [(0, "3"), (1, "5")]
    assert [(d.index, d.physical) for d in lease.visible_devices(8)] == [(0, "3"), (1, "5")]  # at most as listed
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-aaaa,-1,2")
    assert [d.physical for d in lease.visible_devices(4)] == ["GPU-aaaa"]  # CUDA stops at the first invalid entry
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert lease.visible_devices(4) == []
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert [d.physical for d in lease.visible_devices(3)] == ["0", "1", "2"]


def test_timeout_from_env(lock_env, monkeypatch):
    monkeypatch.setenv(lease.ENV_FAKE_GPUS, "1")
    monkeypatch.setenv(lease.ENV_TIMEOUT, "0.2")
    with lease.device_lease("auto"):
        t0 = time.monotonic()
        with pytest.raises(lease.LeaseTimeout, match="MOMENTUM_NTK_LEASE_TIMEOUT"):
            with lease.device_lease("auto", quiet=True):
                pass
        assert time.monotonic() - t0 < 5


# --- across processes -----------------------------------------------------------------------------------------------


def test_concurrent_processes_get_distinct_devices(lock_env, holders, monkeypatch):
    monkeypatch.setenv(lease.ENV_FAKE_GPUS, "4")
    hs = [holders("auto") for _ in range(4)]
    devices = [h.wait_device() for h in hs]
    assert sorted(devices) == ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]
    rows = lease.holders()
    assert all(r["held"] for r in rows)
    assert {r["holder"]["pid"] for r in rows} == {h.proc.pid for h in hs}
    for h in hs:
        h.release()
    assert not any(r["held"] for r in lease.holders())


def test_sigkilled_holder_is_reclaimed(lock_env, holders, monkeypatch):
    monkeypatch.setenv(lease.ENV_FAKE_GPUS, "1")
    h = holders("auto")
    assert h.wait_device() == "cuda:0"
    with pytest.raises(lease.LeaseTimeout, match=f"held by pid {h.proc.pid}"):
        with lease.device_lease("auto", timeout=0.3, quiet=True):
            pass
    h.kill()  # SIGKILL: no cleanup code runs; the kernel drops the flock with the process
    row = lease.holders()[0]
    assert not row["held"]
    assert row["stale_record"]["pid"] == h.proc.pid  # the record stays, for diagnostics only
    with lease.device_lease("auto", timeout=5) as dev:
        assert dev == "cuda:0"


def test_more_jobs_than_devices_wait_then_proceed(lock_env, monkeypatch):
    monkeypatch.setenv(lease.ENV_FAKE_GPUS, "2")
    hold = 0.6
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", TIMED, str(hold)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        for _ in range(5)
    ]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        results.append(json.loads(out))
    assert {r["device"] for r in results} <= {"cuda:0", "cuda:1"}
    # No device was ever held by two jobs at once ...
    for dev in ("cuda:0", "cuda:1"):
        spans = sorted((r["start"], r["end"]) for r in results if r["device"] == dev)
        for (_, end), (start, _) in zip(spans, spans[1:]):
            assert start >= end, f"{dev} leased twice at once: {spans}"
    # ... so at most two ran at any moment, and the five took at least three rounds.
    events = sorted([(r["start"], 1) for r in results] + [(r["end"], -1) for r in results])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    assert peak <= 2
    assert max(r["end"] for r in results) - min(r["start"] for r in results) >= 3 * hold * 0.95


def test_cuda_visible_devices_maps_to_physical_ids(lock_env, holders, monkeypatch):
    monkeypatch.delenv(lease.ENV_FAKE_GPUS)
    # A job that sees physical GPUs 3 and 5 (as SLURM would set) takes both.
    a = holders("cuda:0", **{lease.ENV_FAKE_GPUS: "2", "CUDA_VISIBLE_DEVICES": "3,5"})
    b = holders("cuda:1", **{lease.ENV_FAKE_GPUS: "2", "CUDA_VISIBLE_DEVICES": "3,5"})
    assert (a.wait_device(), b.wait_device()) == ("cuda:0", "cuda:1")
    files = sorted(p.name for p in lock_env.iterdir())
    assert any(f.endswith(".gpu-3.lock") for f in files) and any(f.endswith(".gpu-5.lock") for f in files)
    assert not any(f.endswith(".gpu-0.lock") or f.endswith(".gpu-1.lock") for f in files)
    # A job that sees only physical GPU 5 (as its cuda:0) must wait for it ...
    c = holders("auto", 0.5, **{lease.ENV_FAKE_GPUS: "1", "CUDA_VISIBLE_DEVICES": "5"})
    assert c.proc.wait(timeout=30) == 2
    assert "held by pid" in c.proc.stderr.read()
    # ... while a job that sees only physical GPU 4 gets its cuda:0 at once.
    d = holders("auto", 0.5, **{lease.ENV_FAKE_GPUS: "1", "CUDA_VISIBLE_DEVICES": "4"})
    assert d.wait_device() == "cuda:0"
    # Once physical 5 is released, the GPU-5-only job gets it.
    b.release()
    e = holders("auto", 5, **{lease.ENV_FAKE_GPUS: "1", "CUDA_VISIBLE_DEVICES": "5"})
    assert e.wait_device() == "cuda:0"


def test_status_cli(lock_env, holders, monkeypatch, capsys):
    monkeypatch.setenv(lease.ENV_FAKE_GPUS, "2")
    h = holders("cuda:1")
    h.wait_device()
    assert lease.main([]) == 0
    out = capsys.readouterr().out
    assert f"held by pid {h.proc.pid}" in out and "cuda:0" in out and "free" in out
    assert lease.main(["--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["held"] for r in rows] == [False, True]
    h.kill()
    assert lease.main([]) == 0
    assert f"last holder pid {h.proc.pid}, exited" in capsys.readouterr().out
    proc = subprocess.run(
        [sys.executable, "-m", "momentum_ntk.lease", "--devices", "1"], capture_output=True, text=True, env=_env()
    )
    assert proc.returncode == 0 and "cuda:0" in proc.stdout


def test_real_cuda_devices_are_keyed_by_uuid(lock_env, monkeypatch):
    """With torch's own devices the lock key is the GPU's UUID: one-GPU SLURM jobs with cgroup-constrained devices
    all see CUDA_VISIBLE_DEVICES=0, yet hold different GPUs and must not wait for each other."""
    import torch

    monkeypatch.delenv(lease.ENV_FAKE_GPUS)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")

    class Props:
        def __init__(self, uuid):
            self.uuid = uuid

    current = {"uuid": "aaaa-1111"}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: Props(current["uuid"]))
    assert [(d.index, d.physical) for d in lease.visible_devices()] == [(0, "uuid-aaaa-1111")]
    with lease.device_lease("cuda") as first:
        current["uuid"] = "bbbb-2222"  # another job's only GPU
        with lease.device_lease("cuda", timeout=0.3) as second:
            assert first == second == "cuda:0"
        current["uuid"] = "aaaa-1111"  # the same GPU again: busy
        with pytest.raises(lease.LeaseTimeout):
            with lease.device_lease("cuda", timeout=0.3, quiet=True):
                pass
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: Props(None))  # no UUID: the CVD entry
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7")
    assert [d.physical for d in lease.visible_devices()] == ["7"]
