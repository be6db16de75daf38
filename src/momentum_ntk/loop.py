"""The training loop over either engine: k runs of a pack stepped together, their metrics copied to the host every
``sync_every`` steps, divergence found at the exact step, one DataFrame per run.

    frames = train_many(X, y, W0, a, [RunSpec("hb", eta, 0.99), RunSpec("nag", eta, 0.99)], steps=1000,
                        engine="auto")   # direct (momentum_ntk.engine) or row space (momentum_ntk.rowspace)

A step is ``forward`` then ``update`` of :mod:`momentum_ntk.engine`, whichever engine's pack it is; the loop keeps
the host record (:data:`momentum_ntk.engine.RECORD`), stops a run at its first non-finite loss or loss above
divergence_factor·ℓ(0), and writes the frames with the CONTRACT.md columns.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from momentum_ntk import defaults, model, rowspace
from momentum_ntk.engine import (
    N_METRICS,
    RECORD,
    SYNC_EVERY,
    Pack,
    RunSpec,
    Shared,
    forward,
    new_direct_pack,
    select,
    shared_state,
    update,
)
from momentum_ntk.errors import UserError
from momentum_ntk.tables import RUN_COLUMNS


def train_many(
    X: np.ndarray,
    y: np.ndarray,
    W0: np.ndarray,
    a: np.ndarray,
    runs: Sequence[dict[str, Any] | RunSpec],
    *,
    steps: int,
    gram_every: int = defaults.GRAM_EVERY,
    gram_rows: Sequence[int] | np.ndarray | None = None,
    dtype: str | torch.dtype | None = None,
    device: str = "cpu",
    divergence_factor: float = defaults.DIVERGENCE_FACTOR,
    progress: bool = False,
    pack_size: int | None = None,
    sync_every: int = SYNC_EVERY,
    trajectory: bool = True,
    engine: str = defaults.ENGINE,
) -> list[pd.DataFrame]:
    """Train k runs (dicts with method, eta, beta) from the same W(0); one DataFrame per run.

    ``engine``: ``direct`` (W as d×m tensors), ``rowspace`` (W(t) = W(0) + Xᵀ C(t) on n×m coefficients C; exact,
    momentum_ntk.rowspace) or ``auto`` (the measured cost rule, momentum_ntk.plan.choose_engine). W0 is a (d, m)
    array, or model.Preactivations (X W(0) only: row-space engine). ``attrs["engine"]`` records the engine used.

    The runs are trained in batches of at most ``pack_size`` (None: all k at once) as batched (k, d, m) tensors with
    shared X: on a GPU one wide batch fills the device, on a CPU ``pack_size=1`` (one after another) is as fast.

    Each frame has one row per step 0..steps_done with the CONTRACT.md columns (``RUN_COLUMNS``), and ``attrs``
    {method, eta, beta, steps, steps_done, diverged, diverged_step, last_finite_loss}. λmin/λmax of H(t) on
    ``gram_rows`` and pattern_changed are filled at steps 0, steps and every ``gram_every`` steps (0: first and last
    only), NaN elsewhere. A run stops at the first step whose loss is non-finite or above divergence_factor·ℓ(0);
    that step's row is kept when its loss is finite. Metrics stay on the device and reach the host every
    ``sync_every`` steps: a diverged run may compute up to that many steps more, but they are dropped, so
    ``diverged_step`` and every output are exactly those of a check at every step. Every run is bit-identical to the
    same run trained alone, whatever ``pack_size`` and ``sync_every``. ``traj_err_h0`` / ``traj_err_inf`` are the
    trajectory errors e(k) of momentum_ntk.trajectory at every step (NaN without ``trajectory``).
    """
    specs = [RunSpec.of(r) for r in runs]
    if not specs:
        raise UserError("no runs given")
    if steps < 0 or gram_every < 0:
        raise UserError(f"steps={steps} and gram_every={gram_every} must be >= 0")
    if pack_size is not None and pack_size < 1 or sync_every < 1:
        raise UserError(f"pack_size={pack_size} must be None or >= 1 and sync_every={sync_every} >= 1")
    n, d, m = np.shape(X)[0], np.shape(X)[-1], np.shape(W0)[-1]
    engine = rowspace.resolve_engine(engine, n, d, m, have_w0=not isinstance(W0, model.Preactivations))
    if engine == "rowspace":
        sh = rowspace.row_shared_state(X, y, W0, a, dtype=dtype, device=device, gram_rows=gram_rows,
                                       trajectory=trajectory)  # fmt: skip
        new_pack = rowspace.new_row_pack
    else:
        sh = shared_state(X, y, W0, a, dtype=dtype, device=device, gram_rows=gram_rows, trajectory=trajectory)
        new_pack = new_direct_pack
    k = len(specs)
    tracked = {0, steps} | (set(range(0, steps + 1, gram_every)) if gram_every else set())
    log = _Log(k, steps, divergence_factor)
    size = k if pack_size is None else pack_size
    bar = _progress(steps * k, progress)
    for start in range(0, k, size):
        pack = new_pack(sh, specs, list(range(start, min(k, start + size))))
        _train_pack(sh, pack, steps, tracked, log, sync_every, bar)
    bar.close()
    frames = [_frame(specs[j], log.rec[j], int(log.last[j]), log.diverged_step[j], steps) for j in range(k)]
    for df in frames:
        df.attrs["engine"] = engine
    return frames


class _Log:
    """Host-side record of k runs: metrics per step, the last kept step and the divergence step of each run."""

    def __init__(self, k: int, steps: int, divergence_factor: float) -> None:
        self.rec = np.full((k, steps + 1, len(RECORD)), np.nan)  # RECORD columns
        self.last = np.full(k, -1)  # last kept step per run
        self.diverged_step: list[int | None] = [None] * k
        self.loss0 = np.full(k, np.nan)
        self.factor = divergence_factor

    def take(self, ids: list[int], t0: int, metrics: np.ndarray, track: dict[int, np.ndarray]) -> list[int]:
        """Enter steps t0.. of the pack's runs ``ids`` (metrics (T, k, 4), track {step: (k, 3)}) in step order, as a
        check after every step would; returns the slots of the runs still going."""
        keep = []
        for slot, run in enumerate(ids):
            for i in range(metrics.shape[0]):
                t = t0 + i
                loss = metrics[i, slot, 0]
                if t == 0:
                    self.loss0[run] = loss
                if t in track:
                    self.rec[run, t, N_METRICS:] = track[t][slot]
                if np.isfinite(loss):
                    self.rec[run, t, :N_METRICS] = metrics[i, slot]
                    self.last[run] = t
                if not np.isfinite(loss) or loss > self.factor * self.loss0[run]:
                    self.diverged_step[run] = t
                    break
            else:
                keep.append(slot)
        return keep


def _train_pack(
    sh: Shared, p: Pack, steps: int, tracked: set[int], log: _Log, sync_every: int, bar: Any
) -> None:
    """Run the pack's steps 0..steps; metrics are buffered on the device and entered into ``log`` in chunks."""
    sh.S0 = None
    buf = torch.empty(min(sync_every, steps + 1), p.k, N_METRICS, dtype=torch.float64, device=sh.X.device)
    track: dict[int, torch.Tensor] = {}
    t0 = 0
    for t in range(steps + 1):
        metrics, gram = forward(sh, p, track=t in tracked)
        if gram is not None:
            track[t] = gram
        buf[t - t0] = metrics
        if t - t0 + 1 == buf.shape[0] or t == steps:  # one host sync per chunk
            metrics = buf[: t - t0 + 1].cpu().numpy()
            keep = log.take(p.ids, t0, metrics, {s: v.cpu().numpy() for s, v in track.items()})
            track, t0 = {}, t + 1
            if not keep or t == steps:
                break
            if len(keep) < p.k:
                p = select(p, keep)
                buf = buf.new_empty(buf.shape[0], p.k, N_METRICS)
        update(sh, p, t)
        bar.update(p.k)


def train(
    X: np.ndarray,
    y: np.ndarray,
    W0: np.ndarray,
    a: np.ndarray,
    *,
    method: str,
    eta: float,
    beta: float,
    steps: int,
    gram_every: int = defaults.GRAM_EVERY,
    gram_rows: Sequence[int] | np.ndarray | None = None,
    dtype: str | torch.dtype | None = None,
    device: str = "cpu",
    divergence_factor: float = defaults.DIVERGENCE_FACTOR,
    progress: bool = False,
    engine: str = defaults.ENGINE,
) -> pd.DataFrame:
    """Train one run (GD eq. 3, HB eq. 4 or NAG eq. 5) from W0 (d, m) on X (n, d), y (n,) with output weights a (m,).

    Computes in ``dtype`` (default: X's dtype) on ``device`` with ``engine``; returns one row per step (see
    ``train_many``) with divergence info and the engine in ``df.attrs``.
    """
    return train_many(
        X,
        y,
        W0,
        a,
        [RunSpec(method, float(eta), float(beta))],
        steps=steps,
        gram_every=gram_every,
        gram_rows=gram_rows,
        dtype=dtype,
        device=device,
        divergence_factor=divergence_factor,
        progress=progress,
        engine=engine,
    )[0]


def _frame(spec: RunSpec, rec: np.ndarray, last: int, diverged_step: int | None, steps: int) -> pd.DataFrame:
    rows = rec[: last + 1]
    df = pd.DataFrame({"step": np.arange(last + 1, dtype=np.int64)} | {c: rows[:, RECORD.index(c)] for c in RUN_COLUMNS[1:]})
    df.attrs.update(
        method=spec.method,
        eta=spec.eta,
        beta=spec.beta,
        steps=steps,
        steps_done=last,
        diverged=diverged_step is not None,
        diverged_step=diverged_step,
        last_finite_loss=float(rows[-1, 0]) if last >= 0 else None,
    )
    return df


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(steps: int, enabled: bool) -> Any:
    """A tqdm bar on stderr (steps/s and ETA, refreshed at most every 5 s so logs stay small)."""
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=steps, unit="step", mininterval=5.0, file=sys.stderr, dynamic_ncols=False, ascii=True)
