"""Silent corruption of a run Parquet: flip one random bit, read the file back, and count what the reader does.

    PYTHONPATH=src python benchmarks/bitflip.py                                   # a run written here (tiny preset size)
    PYTHONPATH=src python benchmarks/bitflip.py --steps 2000                      # ... of the quick preset's length
    PYTHONPATH=src python benchmarks/bitflip.py --run results/runs/mnist5k/hb/m64_c10_b0.9_s0.parquet --trials 200

Each trial copies the run file (and the SHA-256 record its writer left beside it, ``.<name>.sha256``), flips one bit
at a random position and reads the copy with the stages' checked reader, ``momentum_ntk.io.read_table``, twice:

- ``without hash``: the copy alone, as every stage read run files before content hashes were recorded (Parquet
  itself has no checksum unless page checksums are written, and pyarrow writes none by default);
- ``with hash``: the copy with its record, as stages read them now.

A read ends in one of four ways: an error naming the file and the fix (caught), the same values (harmless: the flip
hit bytes the values do not depend on), different values without an error (silent), or an exception that is not a
clean error, in the read or when the values are used (crash: a traceback in the stage). Values are compared column
by column, NaN equal to NaN, with the column names and types.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from momentum_ntk import io
from momentum_ntk.errors import UserError


def synthetic_run(folder: Path, steps: int = 40) -> Path:
    """A run Parquet as the tiny preset writes one (80 unit rows of dimension 784, m = 64, NAG, ``steps`` steps (the
    tiny preset's 40, the quick preset's 2000), the Gram tracked every 10 steps, float64), through
    ``io.write_parquet`` (so with its hash record)."""
    from momentum_ntk import loop, model

    rng = np.random.default_rng(0)
    X = rng.standard_normal((80, 784))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    y = np.where(np.arange(80) < 40, 1.0, -1.0)
    W0, a = model.init_params(784, 64, 0)
    df = loop.train(X, y, W0, a, method="nag", eta=0.5, beta=0.9, steps=steps, gram_every=10, dtype="float64")
    df.attrs = {}
    path = folder / "m64_c10_b0.9_s0.parquet"
    io.write_parquet(path, df)
    return path


def same_values(a: Any, b: Any) -> bool:
    """Two pyarrow Tables hold the same values: names, types, row count, and every column (NaN equal to NaN)."""
    if a.column_names != b.column_names or a.schema.types != b.schema.types or a.num_rows != b.num_rows:
        return False
    for x, y in zip(a.columns, b.columns):
        u, v = x.to_numpy(zero_copy_only=False), y.to_numpy(zero_copy_only=False)
        nan = u.dtype.kind == "f"
        if u.shape != v.shape or not np.array_equal(u, v, equal_nan=nan):
            return False
    return True


def read_outcome(path: Path, original: Any) -> str:
    """'caught' (a UserError naming the file and the rebuild command), 'same', 'silent' (other values, no error) or
    'crash' (an exception that is no UserError, in the read or when the values are used: a traceback in a stage)."""
    try:
        table = io.read_table(path, what="run file", fix=io.rebuild_fix(path))
    except UserError as exc:
        text = str(exc)
        assert str(path) in text and "snakemake --force" in text, text
        return "caught"
    except Exception:  # noqa: BLE001  (what a flipped bit makes pyarrow raise is not ours to list)
        return "crash"
    try:
        return "same" if same_values(table, original) else "silent"
    except Exception:  # noqa: BLE001  (e.g. a column name that is no longer UTF-8)
        return "crash"


def trial(run: Path, trials: int = 200, seed: int = 0) -> dict[str, dict[str, int]]:
    """Flip one random bit per trial in a copy of ``run``; count the outcomes of reading it without and with the
    writer's hash record. Returns {"without hash": {...}, "with hash": {...}} of outcome counts."""
    data = run.read_bytes()
    record = io.hash_record_path(run)
    if not record.is_file():
        raise SystemExit(f"{run} has no hash record {record}: write it with momentum_ntk.io.write_parquet")
    original = io.read_table(run, what="run file", fix="")
    rng = np.random.default_rng(seed)
    counts = {k: {"caught": 0, "same": 0, "silent": 0, "crash": 0} for k in ("without hash", "with hash")}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(trials):
            bit = int(rng.integers(len(data) * 8))
            flipped = bytearray(data)
            flipped[bit // 8] ^= 1 << (bit % 8)
            for kind in counts:
                copy = Path(tmp, kind.replace(" ", "_"), run.name)
                copy.parent.mkdir(exist_ok=True)
                copy.write_bytes(bytes(flipped))
                if kind == "with hash":
                    shutil.copyfile(record, io.hash_record_path(copy))
                counts[kind][read_outcome(copy, original)] += 1
    return counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, help="a run Parquet with its hash record (default: one written here)")
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=40, help="steps of the run written here (without --run)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        run = args.run or synthetic_run(Path(tmp), args.steps)
        counts = trial(run, args.trials, args.seed)
        size = run.stat().st_size
    print(json.dumps({"run": str(args.run or f"written here, {args.steps} steps"), "bytes": size, "trials": args.trials,
                      "seed": args.seed, **counts}, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
