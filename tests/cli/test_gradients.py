"""`sipgrad gradients spectrum` and `sipgrad gradients train`, in-process, small and fast."""

from __future__ import annotations

import json

import pytest

from sipgrad_cli.main import main

from tests.cli.interrupts import interrupted_on_call


def test_spectrum_json_and_files(tmp_path, capsys):
    code = main(["gradients", "spectrum", "--batch-sizes", "8,24", "--k", "1,4,16", "--json", "--out", str(tmp_path)])
    assert code == 0
    document = json.loads(capsys.readouterr().out)
    assert document["model"] == "mlp" and document["data"] == "digits"
    rows = document["rows"]
    assert [(r["batch size"], r["layer"]) for r in rows] == [(8, "1"), (8, "3"), (8, "all"), (24, "1"), (24, "3"),
                                                             (24, "all")]
    for row in rows:
        assert list(row["cosine"]) == ["1", "4", "16"]
        cosines = list(row["cosine"].values())
        assert all(0 <= c <= 1 + 1e-6 for c in cosines) and cosines == sorted(cosines)  # more directions, more of g
        assert len(row["singular values"]) == min(row["batch size"], row["parameters"])
        assert 1 <= row["effective rank"] <= row["batch size"]
    assert rows[0]["cosine"]["16"] == pytest.approx(1.0, abs=1e-5)  # 16 >= rank 8: the whole mean
    assert rows[2]["parameters"] == 64 * 64 + 64 + 64 * 10 + 10
    assert json.loads((tmp_path / "spectrum.json").read_text())["rows"] == rows
    assert (tmp_path / "spectrum.png").stat().st_size > 10_000


def test_spectrum_table(tmp_path, capsys):
    assert main(["gradients", "spectrum", "--model", "cnn", "--batch-sizes", "8", "--k", "2", "--train-steps", "3",
                 "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "cnn on digits, 3 training steps" in out and "k=2" in out
    assert [line.split()[0] for line in out.splitlines()[3:7]] == ["0", "3", "7", "all"]


def test_train_json_runs_every_combination(tmp_path, capsys):
    code = main(["gradients", "train", "--optimizer", "sgd,momentum,pca-sgd", "--label-noise", "0,0.5",
                 "--steps", "4", "--eval-every", "2", "--batch-size", "16", "--k", "4", "--json", "--out",
                 str(tmp_path)])
    assert code == 0
    document = json.loads(capsys.readouterr().out)
    runs = document["runs"]
    assert [(r["config"]["label_noise"], r["config"]["optimizer"]) for r in runs] == [
        (0.0, "sgd"), (0.0, "momentum"), (0.0, "pca-sgd"), (0.5, "sgd"), (0.5, "momentum"), (0.5, "pca-sgd")]
    for r in runs:
        assert r["steps"] == [2, 4] and len(r["test_accuracy"]) == 2
        assert all(0 <= a <= 1 for a in r["test_accuracy"])
        assert len(r["noise_fit"]) == (2 if r["config"]["label_noise"] else 0)
    momentum = runs[1]["probe"]
    assert set(momentum) == {"cos(g, Pg)", "|Pg|/|g|", "cos(v, Pg)", "cos(v, g)", "|Pv|/|v|"}
    summary = document["summary"]
    assert len(summary) == 6 and summary[4]["optimizer"] == "momentum" and "noise fit" in summary[4]
    assert summary[4]["final test accuracy"] == pytest.approx(runs[4]["test_accuracy"][-1])
    assert json.loads((tmp_path / "train.json").read_text())["runs"] == runs
    assert (tmp_path / "accuracy.png").is_file() and (tmp_path / "momentum.png").is_file()


def test_train_table(tmp_path, capsys):
    assert main(["gradients", "train", "--optimizer", "sgd", "--label-noise", "0.2", "--steps", "2",
                 "--batch-size", "8", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "final test accuracy" in out and "sgd" in out
    assert not (tmp_path / "momentum.png").exists()  # no momentum run, no momentum figure
    assert f"wrote {tmp_path / 'train.json'}, {tmp_path / 'accuracy.png'}\n" in out


def test_train_table_lists_the_momentum_figure_when_it_writes_one(tmp_path, capsys):
    assert main(["gradients", "train", "--optimizer", "momentum", "--label-noise", "0", "--steps", "2",
                 "--batch-size", "8", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / 'train.json'}, {tmp_path / 'accuracy.png'}, {tmp_path / 'momentum.png'}\n" in out
    assert (tmp_path / "momentum.png").is_file()


@pytest.mark.parametrize("argv, message", [
    (["spectrum", "--batch-sizes", "5000"], "batch size 5000 exceeds the 1079 examples available"),
    (["spectrum", "--data", "mnist:/no/such/folder"], "no such folder"),
    (["train", "--label-noise", "1.5"], "'1.5' must be in [0, 1]"),
    (["train", "--steps", "0"], "must be at least 1, got 0"),
    (["train", "--optimizer", "adam"], "'adam' is not one of sgd, momentum, pca-sgd"),
    (["train", "--out", "{file}"], "is an existing file, not a folder"),
])
def test_bad_input_is_one_line(tmp_path, capsys, argv, message):
    (tmp_path / "file").write_text("")
    argv = [a.replace("{file}", str(tmp_path / "file")) for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path)]
    try:
        code = main(["gradients", *argv])
    except SystemExit as exit_:  # argparse rejects bad option values while parsing
        code = exit_.code
    assert code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and err.count("error") == 1


def test_ctrl_c_keeps_the_finished_runs(tmp_path, capsys, monkeypatch):
    import sipgrad.analysis.experiments as experiments

    monkeypatch.setattr(experiments, "train_projected", interrupted_on_call(experiments.train_projected, 2))
    code = main(["gradients", "train", "--optimizer", "sgd,pca-sgd", "--label-noise", "0", "--steps", "2",
                 "--batch-size", "8", "--out", str(tmp_path)])
    assert code == 130
    saved = json.loads((tmp_path / "train.json").read_text())
    assert [r["config"]["optimizer"] for r in saved["runs"]] == ["sgd"]
    assert (tmp_path / "accuracy.png").is_file()
    assert "interrupted; wrote the 1 run(s) finished of 2" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["spectrum", "--lr", "0.001", "--batch-sizes", "8", "--k", "1"], "--lr is the learning rate of --train-steps"),
    (["train", "--subspace", "batch", "--sketch", "16"], "--sketch sets the streaming sketch"),
    (["train", "--subspace", "batch", "--decay", "1"], "--decay sets the streaming sketch"),
    (["train", "--optimizer", "sgd", "--momentum", "0.5"], "--momentum sets the momentum optimizer"),
    (["spectrum", "--k", "99999999999999999999"], "--k: '99999999999999999999' is too large"),
])
def test_options_the_runs_would_ignore_are_refused(capsys, tmp_path, argv, message):
    try:
        code = main(["gradients", *argv, "--out", str(tmp_path / "out")])
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and message in err[-1] and "Traceback" not in "\n".join(err)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_momentum_figure_of_an_earlier_sweep_is_not_left_beside_a_new_train_json(capsys, tmp_path):
    out = tmp_path / "out"
    base = ["gradients", "train", "--steps", "4", "--eval-every", "2", "--label-noise", "0", "--out", str(out)]
    assert main([*base, "--optimizer", "sgd,momentum"]) == 0 and (out / "momentum.png").is_file()
    assert main([*base, "--optimizer", "sgd"]) == 0
    capsys.readouterr()
    assert not (out / "momentum.png").exists() and (out / "accuracy.png").is_file()


def test_a_diverging_spectrum_training_names_its_options(capsys, tmp_path):
    code = main(["gradients", "spectrum", "--batch-sizes", "8", "--k", "1", "--train-steps", "3", "--lr", "1e30",
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("sipgrad: error: the --train-steps training before the spectra diverged")
