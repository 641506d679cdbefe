"""Peak memory and output size of `sipgrad explain` on one large photo (6000 x 4000 by default).

Each measurement is a fresh process; its peak resident set size comes from the kernel
(``wait4``'s ``ru_maxrss``). The baseline process only imports sipgrad and loads the model,
so "photo's share" = explain's peak minus the baseline's: what the photo itself costs.

    python benchmarks/large_photo_memory.py --out docs/data/large_photo_memory.json
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import print_table, write_json  # noqa: E402


# A fresh, small parent: Linux keeps the parent's peak as a floor for a child's ru_maxrss
# across exec (vfork shares the parent's memory until then), so measuring from a big process
# (pytest, a benchmark that imported torch) would report the parent's size, not the child's.
_LAUNCHER = ("import os, subprocess, sys; child = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL); "
             "_, status, usage = os.wait4(child.pid, 0); print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)")


def peak_mib(command: list[str]) -> float:
    """Peak RSS (MiB) of ``command`` run as a child of a fresh small process; raises if it fails."""
    done = subprocess.run([sys.executable, "-S", "-c", _LAUNCHER, *command], stderr=subprocess.PIPE, stdout=subprocess.PIPE,
                          text=True)
    if not done.stdout.strip() or done.stdout.split()[0] != "0":
        raise SystemExit(f"{' '.join(command)} failed: {done.stderr[-2000:]}")
    return int(done.stdout.split()[1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=6000)
    parser.add_argument("--height", type=int, default=4000)
    parser.add_argument("--out", default="benchmarks/results/large_photo_memory.json")
    args = parser.parse_args()

    import numpy as np
    from PIL import Image
    from skimage import data

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        photo = Path(scratch) / "large.jpg"
        Image.fromarray(data.chelsea()).resize((args.width, args.height), Image.BILINEAR).save(photo, quality=90)
        # os._exit skips the interpreter's teardown, which on the CUDA build of torch alone peaks
        # about 120 MiB above the import (an explain run has freed its photo by then).
        baseline = peak_mib([sys.executable, "-c", "import os, sipgrad; sipgrad.load_model(); os._exit(0)"])
        rows.append({"run": "import sipgrad + load_model (baseline)", "peak_mib": baseline})
        torch_only = peak_mib([sys.executable, "-c", "import os, torch; os._exit(0)"])
        rows.append({"run": "import torch", "peak_mib": torch_only})
        small = Path(scratch) / "small.jpg"
        Image.fromarray(data.chelsea()).save(small, quality=90)
        rows.append({"run": "explain, the same photo at 451 x 300", "peak_mib": peak_mib(
            [sys.executable, "-m", "sipgrad_cli", "explain", str(small), "--out", str(Path(scratch) / "small")])})
        for dtype in ("float32", "float16"):
            out = Path(scratch) / dtype
            peak = peak_mib([sys.executable, "-m", "sipgrad_cli", "explain", str(photo), "--out", str(out),
                             "--saliency-dtype", dtype])
            sizes = {p.name.split(".", 2)[-1]: p.stat().st_size / 2**20 for p in out.iterdir()}
            saliency = np.load(next(out.glob("*.saliency.npy")), mmap_mode="r")
            rows.append({"run": f"explain, --saliency-dtype {dtype}", "peak_mib": peak, "peak_kb": round(peak * 1024),
                         "photo_share_mib": peak - baseline,
                         "saliency_mib": sizes["saliency.npy"], "overlay_mib": sizes["overlay.png"],
                         "figure_mib": sizes["figure.png"], "saliency_shape": list(saliency.shape)})
    print_table(rows, ["run", "peak_mib", "peak_kb", "photo_share_mib", "saliency_mib", "overlay_mib", "figure_mib"])
    write_json(args.out, rows, command="python benchmarks/large_photo_memory.py " + " ".join(sys.argv[1:]),
               photo=[args.width, args.height])


if __name__ == "__main__":
    main()
