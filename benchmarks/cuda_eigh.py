"""Where should ``pca:K``'s small symmetric eigendecompositions run when the model is on a GPU?

    python benchmarks/cuda_eigh.py --out cuda_eigh.json      (needs CUDA; CI has none)
    python benchmarks/cuda_eigh.py --cpu --batch 16 --out cuda_eigh_cpu.json   (the CPU's routes)

``pca:K`` (``sipgrad.hooks.policies.truncate_rank``) takes, for each sample and hooked layer,
the top-K eigenvectors of the N x N Gram matrix of its gradient matrix (C x N, N = H x W:
196 on Lite0's 14 x 14 layers, 49 on its 7 x 7 ones). On an H200 ``explain`` with ``pca:8``
ran 9x slower than plain ``grad`` while it took them from batched ``eigh``, which on CUDA
works through these small matrices one by one (docs/benchmarks.md, GPU). This script times, on Lite0's hooked shapes at
batch 64 (float32), the ways to get those eigenvectors:

* ``eigh on cuda`` (the current code), with PyTorch's default linear-algebra library and
  with ``magma`` preferred;
* ``eigh on the cpu``: the Gram matrix copied to the host, decomposed there, the K vectors
  copied back;
* ``svd gesvda`` (cuSOLVER's batched approximate SVD of the C x N matrix itself);

and checks each against float64 ``eigh`` on the CPU (the projection's relative error). Then
it times ``explain`` end to end (64 images, ``grad``, ``pca:8``) with each variant swapped
in, and with sipgrad's own ``truncate_rank`` (whatever route it takes on CUDA), in
interleaved rounds. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import interleaved, print_table, write_json  # noqa: E402

import sipgrad  # noqa: E402
from sipgrad.hooks import policies  # noqa: E402

RANK = 8
# Lite0's SIP layers at 224 x 224: (channels, positions) of each hooked gradient.
SHAPES = [(480, 196), (672, 196), (672, 196), (672, 49)] + [(1152, 49)] * 4 + [(1280, 49)]


def top_vectors_cuda(gram: torch.Tensor, k: int) -> torch.Tensor:
    return torch.linalg.eigh(gram)[1][:, :, -k:]


def top_vectors_host(gram: torch.Tensor, k: int) -> torch.Tensor:
    return torch.linalg.eigh(gram.cpu())[1][:, :, -k:].to(gram.device)


def projector(matrix: torch.Tensor, k: int, how: str) -> torch.Tensor:
    """The rank-k truncation of each B x C x N matrix (C >= N), by ``how``."""
    if how == "svd gesvda":
        u, s, vh = torch.linalg.svd(matrix, full_matrices=False, driver="gesvda")
        top = vh[:, :k].transpose(1, 2)
    else:
        gram = matrix.transpose(1, 2) @ matrix
        top = (top_vectors_host if how == "eigh on the cpu" else top_vectors_cuda)(gram, k)
    return (matrix @ top) @ top.transpose(1, 2)


VARIANTS = ("eigh on cuda", "eigh on cuda (magma)", "eigh on the cpu", "svd gesvda")


def run_variant(how: str, matrix: torch.Tensor) -> torch.Tensor:
    if how == "eigh on cuda (magma)":
        before = torch.backends.cuda.preferred_linalg_library()
        torch.backends.cuda.preferred_linalg_library("magma")
        try:
            return projector(matrix, RANK, "eigh on cuda")
        finally:
            torch.backends.cuda.preferred_linalg_library(before)
    return projector(matrix, RANK, how)


def kernel_rows(batch: int, rounds: int) -> list[dict]:
    generator = torch.Generator().manual_seed(0)
    matrices = [torch.randn(batch, c, n, generator=generator) for c, n in SHAPES]
    references = [policies.truncate_rank(m.double(), RANK) for m in matrices]
    on_gpu = [m.cuda() for m in matrices]
    rows = []
    for how in VARIANTS:
        try:
            errors = [float((run_variant(how, g).double().cpu() - r).norm() / r.norm())
                      for g, r in zip(on_gpu, references)]
        except RuntimeError as error:  # a driver this build lacks
            rows.append({"variant": how, "error": str(error).splitlines()[0]})
            continue
        seconds = interleaved({how: lambda how=how: [run_variant(how, g) for g in on_gpu]}, rounds)[how]
        rows.append({"variant": how, "batch": batch, "ms per batch (9 layers)": 1000 * seconds,
                     "worst relative error vs float64": max(errors)})
    return rows


def cpu_rows(batch: int, rounds: int) -> list[dict]:
    """The CPU's choice: sipgrad's route (``eigh`` of the Gram matrix) against ``torch.linalg.svd``, side by side."""
    generator = torch.Generator().manual_seed(0)
    matrices = [torch.randn(batch, c, n, generator=generator) for c, n in SHAPES]
    references = [policies.truncate_rank(m.double(), RANK) for m in matrices]

    def by_svd(matrix: torch.Tensor) -> torch.Tensor:
        top = torch.linalg.svd(matrix, full_matrices=False)[2][:, :RANK].transpose(1, 2)
        return (matrix @ top) @ top.transpose(1, 2)

    routes = {"eigh of the Gram matrix (sipgrad's CPU route)": lambda m: policies.truncate_rank(m, RANK),
              "torch.linalg.svd": by_svd}
    seconds = interleaved({name: (lambda route=route: [route(m) for m in matrices]) for name, route in routes.items()},
                          rounds)
    return [{"variant": name, "batch": batch, "threads": torch.get_num_threads(),
             "ms per batch (9 layers)": 1000 * seconds[name],
             "x eigh route": seconds[name] / seconds["eigh of the Gram matrix (sipgrad's CPU route)"],
             "worst relative error vs float64": max(float((route(m).double() - r).norm() / r.norm())
                                                    for m, r in zip(matrices, references))}
            for name, route in routes.items()]


def explain_rows(batch: int, rounds: int, usable: list[str]) -> list[dict]:
    model = sipgrad.load_model(device="cuda")
    inputs = torch.randn(batch, 3, 224, 224, device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    original = policies.truncate_rank

    def explain_with(how: str, images: torch.Tensor) -> torch.Tensor:
        policies.truncate_rank = lambda matrix, rank: run_variant(how, matrix)  # LowRankFilter looks it up per call
        try:
            return sipgrad.explain(model, images, method="grad", sip=f"pca:{RANK}", batch_size=batch).input_saliency
        finally:
            policies.truncate_rank = original

    def library_default(images: torch.Tensor) -> torch.Tensor:
        return sipgrad.explain(model, images, method="grad", sip=f"pca:{RANK}", batch_size=batch).input_saliency

    variants = {"plain grad": lambda: sipgrad.explain(model, inputs, method="grad", batch_size=batch),
                "sipgrad's truncate_rank": lambda: library_default(inputs)}
    variants.update({how: (lambda how=how: explain_with(how, inputs)) for how in usable})
    seconds = interleaved(variants, rounds)
    maps = {how: explain_with(how, inputs[:8]) for how in usable}
    maps["sipgrad's truncate_rank"] = library_default(inputs[:8])
    reference = maps[usable[0]]
    return [{"variant": how, "batch": batch, "images/s": batch / s, "x plain": s / seconds["plain grad"],
             "map vs eigh on cuda": (float((maps[how] - reference).abs().max() / reference.abs().max())
                                     if how in maps else None)}
            for how, s in seconds.items()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cpu", action="store_true",
                        help="time the CPU's two routes instead (eigh of the Gram matrix, torch.linalg.svd)")
    parser.add_argument("--out", default="cuda_eigh.json")
    args = parser.parse_args()
    if args.cpu:
        rows = cpu_rows(args.batch, args.rounds)
        print_table(rows, ["variant", "batch", "threads", "ms per batch (9 layers)", "x eigh route",
                           "worst relative error vs float64"])
        write_json(args.out, rows, median_note=f"median of {args.rounds} interleaved rounds after one warm-up")
        return 0
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to measure")
        return 2
    torch.backends.cuda.matmul.allow_tf32 = False
    kernels = kernel_rows(args.batch, args.rounds)
    print_table(kernels, ["variant", "batch", "ms per batch (9 layers)", "worst relative error vs float64", "error"])
    write_json(args.out, kernels, device=torch.cuda.get_device_name())
    usable = [r["variant"] for r in kernels if "error" not in r]
    explained = explain_rows(args.batch, args.rounds, usable)
    print_table(explained, ["variant", "batch", "images/s", "x plain", "map vs eigh on cuda"])
    write_json(args.out, kernels + explained, device=torch.cuda.get_device_name(),
               median_note=f"median of {args.rounds} interleaved rounds after one warm-up")
    return 0


if __name__ == "__main__":
    sys.exit(main())
