"""Plain ``grad`` on CUDA at batch 64 (Lite0), median of 7 calls after one warm-up, for whichever sipgrad is imported.

    python3 benchmarks/cuda_plain_speed.py LABEL          (needs CUDA; CI has none)

Used to compare two versions of the code on one GPU, by running it alternately with
PYTHONPATH pointing at each tree (``git archive COMMIT | tar -x -C OLD``):

    PYTHONPATH=OLD python3 benchmarks/cuda_plain_speed.py old
    PYTHONPATH=.   python3 benchmarks/cuda_plain_speed.py new

Prints one line: the label, which sipgrad ran, images per second, and the TF32 and cuDNN
flags as they stand after the calls.
"""

import statistics
import sys
import time

import torch

import sipgrad

model = sipgrad.load_model(device="cuda")
x = torch.randn(64, 3, 224, 224, device="cuda", generator=torch.Generator("cuda").manual_seed(0))
sipgrad.explain(model, x, method="grad", batch_size=64)
times = []
for _ in range(7):
    torch.cuda.synchronize()
    began = time.perf_counter()
    sipgrad.explain(model, x, method="grad", batch_size=64)
    torch.cuda.synchronize()
    times.append(time.perf_counter() - began)
print(sys.argv[1], sipgrad.__file__, f"{64 / statistics.median(times):.0f} img/s",
      "tf32", torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32,
      "cudnn det/bench", torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark, flush=True)
