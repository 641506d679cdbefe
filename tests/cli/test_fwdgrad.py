"""`sipgrad fwdgrad`: the cosine table and forward training, in-process and small."""

from __future__ import annotations

import json

import pytest
from PIL import Image
from sipgrad_cli.main import main


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cosine_json_rows_and_heatmaps(capsys, tmp_path):
    code, out, err = run_cli(capsys, "fwdgrad", "cosine", "--batch-sizes", "8,64", "--samplers", "gaussian,activity",
                             "--directions", "2", "--trials", "6", "--json", "--out", tmp_path)
    assert code == 0, err
    document = json.loads(out)
    assert document["parameters"] == 64 * 128 + 128 + 128 * 10 + 10
    assert 0 < document["closed_form"] < 0.05
    assert [(r["batch_size"], r["sampler"]) for r in document["rows"]] == [
        (8, "gaussian"), (8, "activity"), (64, "gaussian"), (64, "activity")]
    assert all(0 < r["cosine"] < 1 and r["stderr"] > 0 for r in document["rows"])
    assert json.loads((tmp_path / "cosine.json").read_text()) == document
    assert Image.open(tmp_path / "gradient_row_correlation.png").size[0] > 500


def test_cosine_table_text(capsys):
    code, out, err = run_cli(capsys, "fwdgrad", "cosine", "--batch-sizes", "16", "--samplers", "gaussian",
                             "--trials", "3")
    assert code == 0, err
    assert "closed form" in out and out.strip().splitlines()[-1].split()[0] == "16"


def test_train_forward_beside_backprop(capsys, tmp_path):
    code, out, err = run_cli(capsys, "fwdgrad", "train", "--grad", "forward,backprop", "--directions", "4",
                             "--steps", "40", "--eval-every", "20", "--json", "--out", tmp_path)
    assert code == 0, err
    document = json.loads(out)
    runs = {run["config"]["gradient"]: run for run in document["runs"]}
    assert set(runs) == {"forward", "backprop"}
    for run in runs.values():
        assert run["steps"] == [20, 40] and len(run["test_accuracy"]) == 2
        assert 0 <= run["final_accuracy"] <= 1 and run["seconds_per_step"] > 0 and run["peak_memory_mib"] > 0
    assert runs["backprop"]["time_vs_backprop"] == 1.0 and runs["forward"]["time_vs_backprop"] > 0
    assert runs["backprop"]["final_accuracy"] > 0.5
    assert Image.open(tmp_path / "forward_train.png").size[0] > 500
    assert json.loads((tmp_path / "forward_train.json").read_text()) == document


def test_train_binary_table_reports_memory(capsys):
    code, out, err = run_cli(capsys, "fwdgrad", "train", "--model", "binary-mlp", "--grad", "forward",
                             "--directions", "2", "--steps", "10", "--eval-every", "10", "--latent-bits", "6,32")
    assert code == 0, err
    assert "forward gaussian K=2 (adam, 6-bit)" in out and "memory (counted)" in out


@pytest.mark.parametrize("args,message", [
    (["cosine", "--trials", "1"], "at least 2 (a standard error needs two trials)"),
    (["cosine", "--batch-sizes", "0"], "must be at least 1"),
    (["train", "--lr", "-1"], "must be greater than 0"),
    (["train", "--latent-bits", "40"], "latent bits must be 2..16"),
])
def test_bad_numbers_fail_at_parse_time_with_one_line(capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["fwdgrad", *args])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_bad_input_is_one_line_not_a_traceback(capsys, tmp_path):
    code, _out, err = run_cli(capsys, "fwdgrad", "cosine", "--samplers", "gaussian,nope", "--trials", "2")
    assert code == 2 and err.strip().count("\n") == 0 and "unknown direction sampler 'nope'" in err
    code, _out, err = run_cli(capsys, "fwdgrad", "train", "--data", f"mnist:{tmp_path / 'missing'}", "--steps", "1")
    assert code == 2 and err.strip().count("\n") == 0 and "no such folder" in err
    code, _out, err = run_cli(capsys, "fwdgrad", "train", "--latent-bits", "6", "--steps", "1")
    assert code == 2 and "needs a binary model" in err


def test_plot_redraws_a_runs_file_and_rejects_other_json(capsys, tmp_path):
    runs = {"model": "mlp", "data": "digits",
            "runs": [{"label": "backprop (adam)", "steps": [10, 20], "test_accuracy": [0.5, 0.9]},
                     {"label": "forward gaussian K=4 (adam)", "steps": [10, 20], "test_accuracy": [0.2, 0.4]}]}
    (tmp_path / "runs.json").write_text(json.dumps(runs))
    code, _out, err = run_cli(capsys, "fwdgrad", "plot", tmp_path / "runs.json", "--out", tmp_path / "curves.png")
    assert code == 0, err
    assert Image.open(tmp_path / "curves.png").size[0] > 800
    (tmp_path / "other.json").write_text(json.dumps({"rows": []}))
    code, _out, err = run_cli(capsys, "fwdgrad", "plot", tmp_path / "other.json", "--out", tmp_path / "x.png")
    assert code == 2 and "not a forward_train.json" in err and err.strip().count("\n") == 0


@pytest.mark.parametrize("experiment", ["cosine", "train", "plot"])
def test_every_experiment_option_has_help(capsys, experiment):
    with pytest.raises(SystemExit) as info:
        main(["fwdgrad", experiment, "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert "--out" in text and "show this help message" in text


@pytest.mark.parametrize("argv, message", [
    (["cosine", "--batch-sizes", "8", "--trials", "2", "--out", ""], "--out: empty"),
    (["cosine", "--trials", "1"], "--trials: must be at least 2 (a standard error needs two trials), got 1"),
    (["train", "--optimizer", "adam", "--momentum", "0.5"], "--momentum is SGD's; --optimizer adam does not use it"),
    (["train", "--grad", "backprop", "--sampler", "activity"], "--sampler sets the forward-gradient runs"),
    (["train", "--grad", "backprop", "--directions", "4"], "--directions sets the forward-gradient runs"),
    (["train", "--batch-size", "3000000", "--steps", "1"], "batch size 3000000 exceeds the 1079 training examples"),
    (["train", "--directions", "99999999999999999999"], "--directions: '99999999999999999999' is too large"),
])
def test_options_that_would_be_ignored_or_cannot_run_are_refused(capsys, argv, message):
    """Silently ignored options were also written into the JSON config as if used."""
    try:
        code = main(["fwdgrad", *argv])
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and message in err[-1] and "Traceback" not in "\n".join(err)
