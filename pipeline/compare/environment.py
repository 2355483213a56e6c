"""A side's environment for ``vaebench compare``: what its runs trained on and with, from the
``provenance.json`` beside its ``metrics.json``, and what changed between the two sides.

Each report directory holds a ``provenance.json`` beside its ``metrics.json``
(:mod:`pipeline.reporting.provenance`; read from git for ``rev:REV``; the ``paper`` side has none). When both
sides have one and they differ in the kinds of device the runs trained on (``cpu``, ``cuda``), the
torch build (``torch.__version__``, and ``torch.version.cuda`` where both record it), the GPU
(where both name one) or the CPU model (``machine.cpu``, where both name one: torch's own kernels
and MKL's take other code paths on another processor, and a training run amplifies the last bits
they change), the output opens with "environment changed: devices cpu -> cuda (torch
2.13.0+cpu -> 2.13.0+cu126)", and the verdicts (:mod:`pipeline.compare.verdicts`) excuse a speed
change and widen a bound's or marginal likelihood's tolerance.

A side without provenance.json (a metrics.json alone, an older revision, a file not named
metrics.json) is not checked; an older provenance.json without ``environment`` is read from its
``devices`` and ``packages.torch``.
"""
from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass
from pathlib import Path

from pipeline.compare.compare import CompareInputError
from pipeline.compare.sides import METRICS_FILE, revision_and_path, show_at_revision

PROVENANCE_FILE = "provenance.json"  # beside metrics.json in a report directory


@dataclass(frozen=True)
class Environment:
    """What a report's runs trained on and with, from its provenance.json (None: not recorded)."""
    devices: tuple[str, ...]  # the kinds of device the runs trained on ("cpu", "cuda"), sorted
    torch: str | None  # torch.__version__, e.g. "2.13.0+cu126"
    torch_cuda: str | None = None  # torch.version.cuda: None on a CPU build
    gpu: str | None = None  # CUDA device 0's name
    build_recorded: bool = False  # whether torch_cuda was recorded (an older provenance.json lacks it)
    cpu: str | None = None  # the processor's model name (provenance.json's machine.cpu)


def _device_kind(device: str) -> str:
    """``cuda:1`` -> ``cuda``: which of several GPUs of a machine a run used is no environment change."""
    return str(device).split(":", 1)[0]


def environment_of(provenance: dict, origin: str) -> Environment:
    """A provenance.json's ``environment``; for an older one without it, its ``devices`` and
    ``packages.torch``."""
    if not isinstance(provenance, dict):
        raise CompareInputError(f"{origin} must hold a JSON object (provenance.json): regenerate it with "
                                f"`vaebench report`, or remove it to compare without an environment check")
    recorded = provenance.get("environment")
    recorded = recorded if isinstance(recorded, dict) else {}
    devices = recorded.get("devices", provenance.get("devices")) or []
    packages = provenance.get("packages") if isinstance(provenance.get("packages"), dict) else {}
    machine = provenance.get("machine") if isinstance(provenance.get("machine"), dict) else {}
    if not isinstance(devices, list):
        raise CompareInputError(f"{origin}: `devices` is {devices!r}, not a list of device names: regenerate it "
                                f"with `vaebench report`, or remove it to compare without an environment check")
    return Environment(devices=tuple(sorted({_device_kind(d) for d in devices})),
                       torch=recorded.get("torch", packages.get("torch")), torch_cuda=recorded.get("torch_cuda"),
                       gpu=recorded.get("gpu"), build_recorded="torch_cuda" in recorded,
                       cpu=machine.get("cpu") if isinstance(machine.get("cpu"), str) else None)


def _parse_environment(text: str, origin: str) -> Environment:
    try:
        provenance = json.loads(text)
    except json.JSONDecodeError as err:
        raise CompareInputError(f"{origin} is not valid JSON ({err.msg} at line {err.lineno}): regenerate it with "
                                f"`vaebench report`, or remove it to compare without an environment check") from None
    return environment_of(provenance, origin)


def read_environment(spec: str, repo: Path, profile: str) -> Environment | None:
    """The environment of one side, from the provenance.json beside its metrics.json (at REV for
    ``rev:REV``); None for ``paper``, for a side without one (nothing to check) and for a file not
    named metrics.json (a copy elsewhere: a provenance.json beside it need not be its report's)."""
    if spec == "paper":
        return None
    if spec.startswith("rev:"):
        revision, path = revision_and_path(spec, profile)
        if path.endswith(".json") and posixpath.basename(path) != METRICS_FILE:
            return None
        folder = posixpath.dirname(path) if path.endswith(".json") else path.rstrip("/")
        candidate = posixpath.join(folder, PROVENANCE_FILE)
        text, _ = show_at_revision(spec, repo, revision, candidate)
        return None if text is None else _parse_environment(text, f"{candidate} at {revision}")
    path = Path(spec)
    if not path.is_dir() and path.name != METRICS_FILE:
        return None
    provenance = (path if path.is_dir() else path.parent) / PROVENANCE_FILE
    return _parse_environment(provenance.read_text(), str(provenance)) if provenance.is_file() else None


def _devices_text(devices: tuple[str, ...]) -> str:
    return ",".join(devices)


def environment_change(base: Environment | None, new: Environment | None) -> str:
    """What differs between the two sides' environments, in words ("environment changed: devices
    cpu -> cuda (torch 2.13.0+cpu -> 2.13.0+cu126)"); empty when nothing does or a side has none.

    Only what both sides record counts: devices when both name some, torch when both know it, the
    CUDA version only when the torch versions read alike (a build's tag, +cu126, usually shows it),
    the GPU and the CPU model when both name one."""
    if base is None or new is None:
        return ""
    changes = []
    if base.devices and new.devices and base.devices != new.devices:
        changes.append(f"devices {_devices_text(base.devices)} -> {_devices_text(new.devices)}")
    if base.torch and new.torch and base.torch != new.torch:
        changes.append(f"torch {base.torch} -> {new.torch}")
    elif base.build_recorded and new.build_recorded and base.torch_cuda != new.torch_cuda:
        changes.append(f"torch CUDA {base.torch_cuda or 'none'} -> {new.torch_cuda or 'none'}")
    if base.gpu and new.gpu and base.gpu != new.gpu:
        changes.append(f"GPU {base.gpu} -> {new.gpu}")
    if base.cpu and new.cpu and base.cpu != new.cpu:
        changes.append(f"CPU {base.cpu} -> {new.cpu}")
    if not changes:
        return ""
    first, rest = changes[0], changes[1:]
    return f"environment changed: {first}" + (f" ({', '.join(rest)})" if rest else "")


def resolve_environment_change(base_spec: str, new_spec: str, repo: Path, profile: str) -> str:
    """:func:`environment_change` between the two sides' provenance.json files."""
    return environment_change(read_environment(base_spec, repo, profile), read_environment(new_spec, repo, profile))
