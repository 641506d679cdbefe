"""Which torch device a computation may run on: one check shared by the saliency models and the engines.

A device named by a user (a string such as ``cuda:1``) is checked once, before any work, so
that a machine without that backend gives one clear error instead of a failure deep inside
the first copy of weights or data.
"""

from __future__ import annotations

import torch

from sipgrad.errors import SipgradError


def usable_device(device: str | torch.device) -> torch.device:
    """``device`` as a ``torch.device`` that can hold a model's weights and run it here, or one clear error.

    ``meta`` holds shapes without data (explaining on it fails deep inside with "Cannot copy
    out of meta tensor"), and a backend this PyTorch lacks or this machine has no device for
    (``cuda`` without a GPU, ``mps`` off a Mac) fails at the first copy; both are refused here.
    """
    try:
        resolved = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise SipgradError(f"{device!r} is not a device; use cpu, cuda or cuda:N") from None
    if resolved.type == "meta":
        raise SipgradError(f"device {str(device)!r} holds shapes but no data; use cpu, cuda or cuda:N")
    if resolved.type != "cpu":
        backend = getattr(torch, resolved.type, None)
        available = getattr(backend, "is_available", None)
        if available is None or not available():
            raise SipgradError(f"device {str(device)!r}: no {resolved.type} device is available here")
        count = getattr(backend, "device_count", lambda: 1)()
        if resolved.index is not None and resolved.index >= count:
            raise SipgradError(f"device {str(device)!r}: this machine has {count} {resolved.type} device(s)")
    return resolved
