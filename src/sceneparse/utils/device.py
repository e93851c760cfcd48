"""Device names: ``auto`` / ``cpu`` / ``cuda[:N]`` / ``mps`` to a ``torch.device``, with a one-line error."""
from __future__ import annotations

import torch


def resolve_device(name: str) -> torch.device:
    """``"auto"`` (CUDA if available, else CPU) or a torch device string.

    Raises:
        ValueError: not a device name, or a CUDA device that this machine does not have.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as e:
        raise ValueError(f"--device / train.device {name!r} is not a device (use auto, cpu, cuda or cuda:N)") from e
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (device.index or 0) >= count:
            raise ValueError(f"device {name!r} requested but this machine has {count} usable CUDA device(s); "
                             "use --device cpu or auto")
    return device
