"""What a run computes on, for the run's provenance and its numerics: the torch dtype, the TF32 state, the device.

    resolve_dtype("float32", X)   # torch.float32
    device_record("cuda:0")       # GPU name, capability, memory, driver, cuDNN, TF32 state
    strict_float32()              # no TF32: float32 math is IEEE float32 on every device
"""

from __future__ import annotations

import os
import subprocess
from typing import Any

import numpy as np
import torch

from momentum_ntk.errors import UserError


def resolve_dtype(dtype: str | torch.dtype | None, like: np.ndarray) -> torch.dtype:
    """torch dtype from "float32" / "float64" / a torch dtype; None means the dtype of ``like``."""
    if dtype is None:
        dtype = str(like.dtype)
    if isinstance(dtype, torch.dtype):
        out = dtype
    else:
        out = {"float32": torch.float32, "float64": torch.float64}.get(str(dtype).removeprefix("torch."))
    if out not in (torch.float32, torch.float64):
        raise UserError(f"dtype {dtype!r} is not supported; use float32 or float64")
    return out


def tf32_state() -> dict[str, Any]:
    """Whether float32 matmuls may use TF32: torch's flag, the matmul precision and the two environment overrides.

    ``TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1`` makes cuBLAS use TF32 whatever torch's flag says; ``NVIDIA_TF32_OVERRIDE=0``
    forbids TF32 in every NVIDIA library. ``tf32`` is the effective state for CUDA float32 GEMMs.
    """
    override = os.environ.get("TORCH_ALLOW_TF32_CUBLAS_OVERRIDE")
    nvidia = os.environ.get("NVIDIA_TF32_OVERRIDE")
    allowed = bool(torch.backends.cuda.matmul.allow_tf32) or override == "1"
    return {
        "tf32": allowed and nvidia != "0",
        "tf32_torch_flag": bool(torch.backends.cuda.matmul.allow_tf32),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE": override,
        "NVIDIA_TF32_OVERRIDE": nvidia,
    }


def device_record(device: str) -> dict[str, Any]:
    """The compute device for provenance: torch's CUDA build (None: CPU-only), and for CUDA the GPU's name,
    capability, memory, driver and cuDNN versions; always the effective TF32 state (:func:`tf32_state`)."""
    rec: dict[str, Any] = {"torch_cuda": torch.version.cuda}
    if str(device).startswith("cuda"):
        index = torch.device(device).index or 0
        props = torch.cuda.get_device_properties(index)
        rec |= {
            "gpu": props.name,
            "gpu_capability": f"{props.major}.{props.minor}",
            "gpu_memory_gib": round(props.total_memory / 2**30, 1),
            "gpu_driver": _nvidia_driver(),
            "cudnn": torch.backends.cudnn.version(),
        }
    return rec | tf32_state()


def _nvidia_driver() -> str | None:
    """The NVIDIA driver version from nvidia-smi (None when it is missing or does not answer within 10 s)."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10, check=True,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    lines = out.stdout.strip().splitlines()
    return lines[0] if lines else None


def strict_float32() -> None:
    """Disable TF32 and reduced-precision matmuls: float32 math is IEEE float32 on every device."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
