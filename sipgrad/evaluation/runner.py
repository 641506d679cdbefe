"""`evaluate`: run an ``Evaluator`` over a data set with resume, progress and sharding.

Single process: records are appended to ``OUT/records.jsonl`` after every batch.
Under ``torchrun --nproc_per_node N`` (torch.distributed; gloo on CPU, nccl on GPU) each
process takes every N-th case, appends to ``OUT/records.rankR.jsonl``, and process 0
merges everything into ``records.jsonl`` when all are done. Either way a re-run with the
same settings skips finished (case, config) pairs, and ``OUT/run.json`` guards against
mixing results of different settings in one folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

from sipgrad.errors import SipgradError
from sipgrad.evaluation.cases import Case
from sipgrad.evaluation.evaluator import EvalSettings, Evaluator
from sipgrad.evaluation.records import append_records, deduplicated, done_keys, read_records
from sipgrad.io.atomic import atomic_write, write_json
from sipgrad.models.registry import Classifier


def process_device(device: str) -> str:
    """This process's device: under torchrun a bare ``cuda`` means the GPU of its LOCAL_RANK,
    so N processes on one machine use N GPUs instead of all sharing the first."""
    if device == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return device


def backend_for(device: str | torch.device) -> str:
    """nccl for processes that evaluate on a GPU, gloo otherwise (also on a GPU machine run on CPU)."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def distributed_context(device: str | torch.device = "cpu") -> tuple[int, int]:
    """(rank, world size); initialises torch.distributed when launched by torchrun.

    ``device`` is where this process evaluates (see ``process_device``); it picks the backend.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = backend_for(device)
        if backend == "nccl":
            torch.cuda.set_device(torch.device(device))
        dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size()


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def weights_fingerprint(module: torch.nn.Module) -> str:
    """SHA-256 of every parameter and buffer (names, shapes, bytes): which weights made the records."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        array = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}{tuple(tensor.shape)}{array.dtype}".encode())
        digest.update(array.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


# What a run file written before a key existed meant by its absence. Other absent keys are taken as equal.
RUN_FILE_DEFAULTS = {"noise": "row in batch"}  # noise drawn from each case's row in its batch, before 31e873c


def _recorded(previous: dict[str, Any], key: str, now: Any) -> Any:
    """``previous[key]``, or what its absence meant (``RUN_FILE_DEFAULTS``), or ``now`` when nothing is known."""
    return previous[key] if key in previous else RUN_FILE_DEFAULTS.get(key, now)


def _meaning(key: str, value: Any) -> Any:
    """A recorded setting as the values it stood for, so that two spellings of the same settings compare equal.

    ``method_options`` records only some fields: the command always wrote IG steps, SmoothGrad
    samples and the seed, a Python ``evaluate(...)`` before ``EVALUATION_METHOD_DEFAULTS``
    only what it was given (often ``{}``). A field not recorded was ``MethodOptions``' default.
    """
    if key != "method_options" or not isinstance(value, dict):
        return value
    from dataclasses import asdict

    from sipgrad.attribution.methods import MethodOptions

    return {k: v for k, v in {**asdict(MethodOptions()), **value}.items() if v is not None}


def _check_run_file(out: Path, identity: dict[str, Any], rank: int, world: int) -> None:
    """Refuse to mix records of different settings or models in one folder, naming what changed."""
    path = out / "run.json"
    if path.is_file():
        try:
            previous = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as error:  # JSONDecodeError and UnicodeDecodeError alike
            previous = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        if not isinstance(previous, dict):
            raise SipgradError(f"{path}: damaged, so the results in {out} cannot be matched to these settings "
                               f"({previous if isinstance(previous, str) else 'not a JSON object'}); "
                               f"use another output folder")
        changed = [key for key in identity
                   if _meaning(key, _recorded(previous, key, identity[key])) != _meaning(key, identity[key])]
        if changed:
            key = changed[0]
            what = "the model weights" if key == "weights" else f"the {key!r} setting"
            raise SipgradError(f"{out} holds results made with other settings: {what} differs "
                               f"({_recorded(previous, key, None)!r} there, {identity[key]!r} now); use another output folder")
    elif rank == 0:
        write_json(path, identity)
    _barrier(world)


def record_files(out: Path) -> list[Path]:
    return [out / "records.jsonl", *sorted(out.glob("records.rank*.jsonl"))]


def evaluate(classifier: Classifier, cases: list[Case], settings: EvalSettings, out: str | os.PathLike, *,
             dataset: str, batch_size: int = 8, limit: int | None = None, save_maps: bool = False,
             progress: Callable[[int], None] | None = None) -> list[dict[str, Any]] | None:
    """Evaluate ``cases``; returns all records (ordered) on process 0, ``None`` on the others.

    An image that cannot be read gives, per config, a record with an ``error`` key and no
    scores; every other case is still evaluated, and a later run retries it.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rank, world = distributed_context(classifier.device)
    cases = cases[:limit] if limit else cases
    evaluator = Evaluator(classifier, settings)
    identity = {"model": classifier.name, "weights": weights_fingerprint(classifier.module), "dataset": dataset,
                **evaluator.settings.describe()}
    _check_run_file(out, identity, rank, world)
    done = done_keys(read_records(record_files(out)))
    mine = cases[rank::world]
    target = out / ("records.jsonl" if world == 1 else f"records.rank{rank}.jsonl")
    keys = [c.key for c in evaluator.configs]
    pending = [case for case in mine if any((case.case_id, key) not in done for key in keys)]
    if len(pending) < len(mine) and rank == 0:  # say so: a resumed run otherwise looks like a fresh one
        warnings.warn(f"resuming in {out}: {len(mine) - len(pending)} of {len(mine)} cases were already done "
                      f"with these settings", stacklevel=2)
    if progress:
        progress(len(mine) - len(pending))
    for start in range(0, len(pending), batch_size):
        batch = pending[start:start + batch_size]
        # Each image is loaded and preprocessed once here, then shared by every config. Records
        # are written config by config, so progress moves (by a share of the batch) and an
        # interruption keeps every finished config.
        prepared = evaluator.prepare(batch)
        for config in evaluator.configs:
            records = evaluator.evaluate(prepared, [config], keep_maps=save_maps, skip=done)
            if save_maps:
                _save_maps(out, [r for r in records if "_map" in r])
            append_records(target, records)
            if progress:
                progress(len(batch) / len(evaluator.configs))
    _barrier(world)
    if rank != 0:
        return None
    case_order = {case.case_id: i for i, case in enumerate(cases)}
    merged = deduplicated(read_records(record_files(out)), case_order, {k: i for i, k in enumerate(keys)})
    merged = [r for r in merged if r["case"] in case_order]
    # Rewrite once at the end: merges the per-process parts, drops duplicates and any
    # line torn by a crash, and orders records like the data set.
    with atomic_write(out / "records.jsonl") as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in merged))
    for part in out.glob("records.rank*.jsonl"):
        part.unlink()
    return merged


def _save_maps(out: Path, records: list[dict[str, Any]]) -> None:
    import numpy as np

    from sipgrad.io.names import case_file

    for record in records:
        path = case_file(out / "maps", record["config"], record["case"], ".npy")
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, suffix=".tmp.npy") as tmp:
            np.save(tmp, record["_map"])
