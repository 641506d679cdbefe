"""How much freed heap glibc keeps after one Lite0 explanation, and how much ``malloc_trim`` hands back.

    python benchmarks/trim_memory.py [--runs 5] [--out docs/data/trim_memory.json]

Each run is a fresh process: it loads EfficientNet-Lite0 (offline weights), runs one
forward and one backward pass of a 224 x 224 input (what ``explain`` does with ``grad``, which
then trims on its own), reads its resident set (``VmRSS``), calls
``sipgrad.memory.release_freed_memory`` (glibc's ``malloc_trim``) and reads it again. The drop is the freed heap the allocator had kept. Prints each run and the
median, and writes JSON. Linux with glibc only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import print_table, write_json  # noqa: E402

CHILD = r"""
import json, sys, torch
torch.set_num_threads(1)
import sipgrad
from sipgrad.memory import release_freed_memory

def rss_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

model = sipgrad.load_model()
image = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(0), requires_grad=True)
model.module(image)[0].max().backward()  # the passes explain makes, without its own trim at the end
before = rss_mib()
trimmed = release_freed_memory()
after = rss_mib()
print(json.dumps({"rss before MiB": before, "rss after MiB": after, "returned MiB": before - after,
                  "malloc_trim available": trimmed}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", default="docs/data/trim_memory.json")
    args = parser.parse_args()
    rows = []
    for run in range(args.runs):
        done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True)
        rows.append({"run": run + 1, **json.loads(done.stdout.strip().splitlines()[-1])})
    print_table(rows, ["run", "rss before MiB", "rss after MiB", "returned MiB", "malloc_trim available"])
    median = statistics.median(r["returned MiB"] for r in rows)
    print(f"median returned: {median:.1f} MiB")
    write_json(args.out, rows, median_returned_mib=median)
    return 0


if __name__ == "__main__":
    sys.exit(main())
