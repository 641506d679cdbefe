"""Train the cluttered-digits models on CPU, and write a calibration set for `sipgrad calibrate`.

    python benchmarks/train_cluttered_digits.py --out runs/digits   # a few minutes on 2 cores

Writes OUT/digits_resnet.pt and OUT/digits_vgg.pt (state dicts, loadable with
`--model digits_resnet --weights OUT/digits_resnet.pt`), OUT/calibration/<digit>/*.png (a
labelled folder drawn from the training split) and OUT/training.json (accuracies). Then:

    sipgrad calibrate --model digits_resnet --weights OUT/digits_resnet.pt --data OUT/calibration --out OUT/resnet-stats.npz
    sipgrad evaluate --builtin cluttered-digits --model digits_resnet --weights OUT/digits_resnet.pt \\
        --method grad,ig,gradcam --sip none,topq:0.1,topq:0.25,cls,ins --stats OUT/resnet-stats.npz --out OUT/eval-resnet
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sipgrad.evaluation.cluttered import make_samples
from sipgrad.models import load_model


def to_tensors(samples, preprocessing) -> tuple[torch.Tensor, torch.Tensor]:
    pixels = torch.from_numpy(np.stack([s.image for s in samples])).permute(0, 3, 1, 2).float() / 255.0
    return preprocessing.normalize(pixels), torch.tensor([s.label for s in samples])


def train(name: str, train_x, train_y, test_x, test_y, epochs: int, seed: int) -> tuple[torch.nn.Module, dict]:
    torch.manual_seed(seed)
    classifier = load_model(name, pretrained=False)
    model = classifier.module.train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    steps = epochs * ((len(train_x) + 63) // 64)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=2e-3, total_steps=steps)
    began = time.perf_counter()
    for epoch in range(epochs):
        order = torch.randperm(len(train_x))
        for start in range(0, len(train_x), 64):
            index = order[start:start + 64]
            loss = torch.nn.functional.cross_entropy(model(train_x[index]), train_y[index])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
        model.eval()
        with torch.no_grad():
            accuracy = float((model(test_x).argmax(1) == test_y).float().mean())
        model.train()
        print(f"{name} epoch {epoch + 1}/{epochs}: loss {loss.item():.3f}, test accuracy {accuracy:.3f}", flush=True)
    return model.eval(), {"test_accuracy": accuracy, "seconds": time.perf_counter() - began, "epochs": epochs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/digits")
    parser.add_argument("--train-count", type=int, default=4000)
    parser.add_argument("--calibration-count", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", default="digits_resnet,digits_vgg",
                        help="comma-separated models to train, from digits_resnet,digits_vgg (default: both)")
    args = parser.parse_args()
    unknown = [name for name in args.models.split(",") if name not in ("digits_resnet", "digits_vgg")]
    if unknown:
        parser.error(f"--models: unknown model {unknown[0]!r}; choose from digits_resnet, digits_vgg")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    preprocessing = load_model("digits_resnet", pretrained=False).preprocessing
    train_x, train_y = to_tensors(make_samples("train", args.train_count, args.seed), preprocessing)
    test_x, test_y = to_tensors(make_samples("test", 297, args.seed), preprocessing)
    report_path = out / "training.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    # Training is bit-for-bit reproducible only with the same thread count and torch build (oneDNN's BatchNorm
    # and convolutions round differently with other thread counts, and the runs part at the first step):
    # each model's entry records what made it, so two folders can be told apart.
    made_with = {"arguments": {"train_count": args.train_count, "epochs": args.epochs, "seed": args.seed},
                 "threads": torch.get_num_threads(), "torch": torch.__version__,
                 "processor": platform.processor() or platform.machine()}
    for name in args.models.split(","):
        model, report[name] = train(name, train_x, train_y, test_x, test_y, args.epochs, args.seed)
        report[name].update(made_with)
        torch.save(model.state_dict(), out / f"{name}.pt")
    calibration = make_samples("train", args.calibration_count, args.seed + 1)
    for i, sample in enumerate(calibration):
        folder = out / "calibration" / str(sample.label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(sample.image).save(folder / f"{i:05d}.png")
    report_path.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
