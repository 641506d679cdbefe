"""`sipgrad hypergrad`: RFHO's report from the command line, in-process and small."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from sipgrad_cli.main import main

SMALL = ["hypergrad", "--steps", "4", "--hyper-steps", "2", "--batch-size", "50", "--hidden", "8,8"]
KEYS = {"step", "mode", "test_accuracy", "validation_accuracy", "training_accuracy", "validation_error", "state_mib",
        "weights", "iterations", "seconds", "hyperparameters",
        "peak_process_mib", "device"}  # the keys, plus the peak process memory and the device, as in the text
NAMES = [f"rho_l1_{k}" for k in range(3)] + [f"rho_l2_{k}" for k in range(3)] + ["eta", "mu"]


def test_json_lists_both_modes_per_outer_step_with_the_seeds_fields(capsys):
    assert main([*SMALL, "--json", "--dtype", "float64"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [(r["step"], r["mode"]) for r in records] == [(0, "forward"), (0, "reverse"), (1, "forward"), (1, "reverse")]
    for record in records:
        assert set(record) == KEYS
        assert list(record["hyperparameters"]) == NAMES
        assert record["weights"] == 64 * 8 + 8 + 8 * 8 + 8 + 8 * 10 + 10 and record["iterations"] == 4
        assert record["device"] == "cpu"
    forward, reverse = records[0], records[1]
    for name in NAMES:
        f, r = forward["hyperparameters"][name], reverse["hyperparameters"][name]
        assert f["hypergradient"] == pytest.approx(r["hypergradient"], rel=1e-9, abs=1e-12)
        assert f["value"] == pytest.approx(r["value"], rel=1e-9, abs=1e-12)
    assert forward["hyperparameters"]["eta"]["value"] == pytest.approx(0.011, rel=1e-6)  # Adam's first step, 1e-3
    # state memory from the kept tensors: (m + 1) states forward, (T + 2) reverse, float64 weights and velocity
    state = 2 * forward["weights"] * 8 / 2 ** 20
    assert forward["state_mib"] == pytest.approx(9 * state, rel=1e-3)
    assert reverse["state_mib"] == pytest.approx(6 * state, rel=1e-3)


@pytest.mark.parametrize("every", ["0", "3"])
def test_reverse_variants_give_the_same_hypergradient(every, capsys):
    assert main([*SMALL, "--json", "--dtype", "float64", "--hyper-steps", "1"]) == 0
    default = json.loads(capsys.readouterr().out)[1]
    assert main([*SMALL, "--json", "--dtype", "float64", "--hyper-steps", "1", "--mode", "reverse",
                 "--checkpoint-every", every]) == 0
    variant = json.loads(capsys.readouterr().out)[0]
    for name in NAMES:
        assert variant["hyperparameters"][name]["hypergradient"] == pytest.approx(
            default["hyperparameters"][name]["hypergradient"], rel=1e-9, abs=1e-12)
    assert variant["state_mib"] != default["state_mib"]  # checkpoints keep fewer states, the graph more


def test_text_report_prints_the_seeds_lines(capsys):
    assert main([*SMALL, "--mode", "reverse", "--hyper-steps", "1"]) == 0
    out = capsys.readouterr().out
    for line in ("step: 0", "mode: reverse", "memory usage (MiB):", "# weights: 682", "# hyperparameters: 8",
                 "# iterations: 4", "eta: [0.011", "mu: [0.50099999", "Elapsed time (sec):", "peak process memory (MiB):"):
        assert line in out, line
    assert "mode: forward" not in out


def _write_idx(path, array: np.ndarray) -> None:
    codes = {np.dtype(np.uint8): 0x08}
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.tobytes())


def test_mnist_folder_gives_the_seeds_784_300_300_10_network(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for stem, n in (("train", 10_060), ("t10k", 20)):
        _write_idx(tmp_path / f"{stem}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        _write_idx(tmp_path / f"{stem}-labels-idx1-ubyte", rng.integers(0, 10, n, dtype=np.uint8))
    code = main(["hypergrad", "--data", f"mnist:{tmp_path}", "--steps", "1", "--hyper-steps", "1", "--batch-size",
                 "20", "--json"])
    assert code == 0
    records = json.loads(capsys.readouterr().out)
    assert {r["weights"] for r in records} == {328_810}
    assert records[0]["state_mib"] == pytest.approx(9 * 2 * 328_810 * 4 / 2 ** 20, rel=1e-4)  # the seed's 22.58


@pytest.mark.parametrize("argv, message", [
    (["--steps", "0"], "--steps: must be at least 1, got 0"),
    (["--mu", "1"], "--mu: must be in [0, 0.999999], got 1"),
    (["--mu", "0.9999999"], "--mu: must be in [0, 0.999999], got 0.9999999"),  # refused while parsing, not later
    (["--eta", "1e-9"], "--eta: must be in [1e-08, inf], got 1e-9"),
    (["--hidden", "99999999999999999999"], "--hidden: '99999999999999999999' is too large"),
    (["--mode", "reverse", "--compile"], "--compile sets forward mode; --mode reverse does not use it"),
    (["--mode", "forward", "--checkpoint-every", "3"], "--checkpoint-every sets reverse mode"),
    (["--mode", "forward", "--store-activations"], "--store-activations sets reverse mode"),
    (["--data", "mnist:/no/such/folder"], "/no/such/folder: no such folder"),
    (["--hidden", ","], "--hidden: ',' names nothing; give comma-separated values such as 300,300"),
    (["--hidden", "300,,300"], "--hidden: '300,,300' has an empty item between commas"),
    (["--seed", "99999999999999999999999"], "--seed:"),
    (["--eta", "1e308"], "start eta=1e+308 is not a finite float32 number"),
    (["--checkpoint-every", "0", "--store-activations"],
     "--store-activations needs a stored trajectory (--checkpoint-every 1 or more), not --checkpoint-every 0"),
])
def test_bad_input_is_one_line_and_a_non_zero_exit(argv, message, capsys):
    try:
        code = main(["hypergrad", *argv])
    except SystemExit as exit_:
        code = exit_.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and "Traceback" not in "\n".join(err)


def test_ctrl_c_keeps_the_finished_records(monkeypatch, capsys):
    from sipgrad.engines import hypergrad

    real = hypergrad.run_experiment

    def interrupted(*args, **kwargs):
        for count, report in enumerate(real(*args, **kwargs)):
            if count == 1:
                raise KeyboardInterrupt
            yield report

    monkeypatch.setattr(hypergrad, "run_experiment", interrupted)
    assert main([*SMALL, "--json"]) == 130
    captured = capsys.readouterr()
    records = json.loads(captured.out)
    assert [(r["step"], r["mode"]) for r in records] == [(0, "forward")]
    assert "interrupted; 1 of the 4 runs (outer steps x modes) had finished and were printed" in captured.err


def test_ctrl_c_before_any_run_finished_says_nothing_was_kept(monkeypatch, capsys):
    from sipgrad.engines import hypergrad

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
        yield

    monkeypatch.setattr(hypergrad, "run_experiment", interrupted)
    assert main([*SMALL, "--json"]) == 130
    captured = capsys.readouterr()
    assert json.loads(captured.out) == []
    assert captured.err.strip().endswith("0 of the 4 runs (outer steps x modes) had finished, so there is nothing to keep")


def test_a_failed_run_prints_no_json_document(capsys):
    """An empty list on stdout looked like a result; the error line is the whole answer."""
    code = main(["hypergrad", "--steps", "3", "--hyper-steps", "1", "--hidden", "8", "--batch-size", "20",
                 "--eta", "1e30", "--json"])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and "non-finite" in err
