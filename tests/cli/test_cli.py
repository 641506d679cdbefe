"""The `sipgrad` command end to end: run in-process through main() for speed, and once as a real process."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sipgrad_cli.main import build_parser, main

from tests.cli.interrupts import interrupted_on_call


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_explain_json_on_bundled_assets(capsys, asset_dir, tmp_path):
    code, out, err = run_cli(capsys, "explain", asset_dir / "chelsea.jpg", asset_dir / "coffee.jpg",
                             "--out", tmp_path, "--json", "--sip", "topq:0.25", "--compare")
    assert code == 0, err
    document = json.loads(out)
    assert document["model"] == "efficientnet_lite0" and document["errors"] == []
    by_name = {r["image"].split("/")[-1]: r for r in document["results"]}
    assert by_name["chelsea.jpg"]["target"] == {"index": 285, "name": "Egyptian cat"}
    assert by_name["coffee.jpg"]["top5"][0]["name"] == "espresso"
    for record in document["results"]:
        assert len(record["top5"]) == 5 and record["top5"][0]["prob"] >= record["top5"][1]["prob"]
        saliency = np.load(record["saliency"])
        original = Image.open(record["image"])
        assert saliency.dtype == np.float32 and saliency.shape == (original.height, original.width)
        assert Image.open(record["overlay"]).size == original.size
        assert record["sip"] == "topq:0.25" and record["seconds"] > 0
        assert Image.open(record["compare"]).size[0] > 0
        # the plain map's files are reported too, and hold the plain (not the SIP) map
        assert record["plain_overlay"].endswith(".grad.overlay.png") and Path(record["plain_overlay"]).is_file()
        assert not np.array_equal(np.load(record["plain_saliency"]), saliency)
    assert not list(tmp_path.glob("*.tmp*"))  # no temporary files left behind
    reported = {Path(r[k]).name for r in document["results"] for k in r if k in
                ("saliency", "overlay", "figure", "compare", "plain_overlay", "plain_saliency")}
    assert reported == {p.name for p in tmp_path.iterdir()}  # every file written is reported


def test_explain_gives_random_methods_the_same_maps_in_any_batch_size(capsys, asset_dir, tmp_path):
    """An image's noise comes from its position in the run, not in its batch: --batch-size 1 and 3 agree, and an
    unreadable file among them moves no other image's position."""
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    images = [asset_dir / "chelsea.jpg", tmp_path / "broken.jpg", asset_dir / "coffee.jpg", asset_dir / "astronaut.jpg"]
    maps = {}
    for size in (1, 3):
        out = tmp_path / f"b{size}"
        code, _, err = run_cli(capsys, "explain", *images, "--method", "smoothgrad", "--smoothgrad-samples", "2",
                               "--sip", "topq:0.25", "--compare", "--batch-size", size, "--out", out)
        assert code == 1 and "broken.jpg" in err  # the unreadable file fails, the rest are explained
        maps[size] = {path.name: np.load(path) for path in out.glob("*.saliency.npy")}
    assert sorted(maps[1]) == sorted(maps[3]) and len(maps[1]) == 6  # plain and SIP (--compare) for each of 3
    for name, saliency in maps[1].items():
        np.testing.assert_allclose(maps[3][name], saliency, atol=1e-4 * float(saliency.max()), err_msg=name)


def test_a_warning_that_holds_for_the_whole_run_is_printed_once_not_once_per_batch(capsys, asset_dir, tmp_path):
    """SIP on a depthwise layer under Grad-CAM at another layer changes nothing: one warning for 3 batches."""
    code, _, err = run_cli(capsys, "explain", asset_dir / "chelsea.jpg", asset_dir / "coffee.jpg",
                           asset_dir / "rocket.jpg", "--method", "gradcam", "--sip", "topq:0.25",
                           "--sip-layers", "_blocks.8._depthwise_conv", "--batch-size", "1", "--out", tmp_path)
    assert code == 0, err
    warnings_printed = [line for line in err.splitlines() if line.startswith("sipgrad: warning: SIP")]
    assert len(warnings_printed) == 1, err


def test_the_compare_figure_names_both_rows_and_says_plain_vs_sip(capsys, asset_dir, tmp_path, monkeypatch):
    from sipgrad.render import figure

    drawn = []
    monkeypatch.setattr(figure, "save_panels", lambda path, image, maps, titles, suptitle: drawn.append(
        (str(path), list(titles), suptitle)))
    code, _, err = run_cli(capsys, "explain", asset_dir / "chelsea.jpg", "--sip", "topq:0.25", "--compare",
                           "--out", tmp_path)
    assert code == 0, err
    (path, titles, suptitle), = drawn  # the SIP result's own figure goes through Explanation.save
    assert path.endswith("chelsea.grad.sip-topq_0.25.compare.png")
    assert titles == ["grad", "grad + SIP topq:0.25"]
    assert "| grad vs grad + SIP topq:0.25 | Egyptian cat" in suptitle


def test_explain_table_gradcam_reports_its_layer(capsys, asset_dir, tmp_path):
    code, out, _ = run_cli(capsys, "explain", asset_dir / "coffee.jpg", "--method", "gradcam", "--out", tmp_path,
                           "--target", "cup")
    assert code == 0
    assert "Grad-CAM layer: _head_act" in out and "target: cup (968)" in out
    listed = out.split("files:")[1].split("\n")[0].strip().split(", ")
    assert [name.rsplit("/", 1)[-1] for name in listed] == [  # cup is not the top-1 (espresso): named by class
        "coffee.gradcam.class-968.overlay.png", "coffee.gradcam.class-968.saliency.npy",
        "coffee.gradcam.class-968.figure.png"]
    assert all(Path(name).is_file() for name in listed)


def test_explaining_one_image_for_two_classes_keeps_both_maps(capsys, asset_dir, tmp_path):
    for target in ("espresso", "cup", "967"):  # top-1, another class, the top-1 again by index
        assert run_cli(capsys, "explain", asset_dir / "coffee.jpg", "--target", target, "--out", tmp_path)[0] == 0
    maps = sorted(p.name for p in tmp_path.glob("*.saliency.npy"))
    assert maps == ["coffee.grad.class-968.saliency.npy", "coffee.grad.saliency.npy"]
    top1, cup = (np.load(tmp_path / name) for name in maps[::-1])
    assert not np.allclose(top1, cup)


def test_a_bad_image_in_a_batch_does_not_stop_the_others(capsys, asset_dir, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(asset_dir / "chelsea.jpg", folder / "a.jpg")
    (folder / "b.png").write_bytes(b"")
    (folder / "c.jpg").write_bytes(b"garbage")
    code, out, err = run_cli(capsys, "explain", folder, "--out", tmp_path / "out", "--json")
    assert code == 1
    document = json.loads(out)
    assert [r["image"].split("/")[-1] for r in document["results"]] == ["a.jpg"]
    assert {e["image"].split("/")[-1] for e in document["errors"]} == {"b.png", "c.jpg"}
    assert "b.png: empty file" in err and "Traceback" not in err


def test_analyze_writes_spectra_and_figures(capsys, asset_dir, tmp_path):
    out = tmp_path / "analysis"
    code, stdout, err = run_cli(capsys, "analyze", asset_dir / "chelsea.jpg", asset_dir / "coffee.jpg",
                                "--sip", "none,topq:0.25", "--layers", "_blocks.15._depthwise_conv,_conv_head",
                                "--out", out, "--json")
    assert code == 0, err
    document = json.loads(stdout)
    assert document["layers"] == ["_blocks.15._depthwise_conv", "_conv_head"]
    rows = {(r["sip"], r["layer"]): r for r in document["summary"]}
    assert set(rows) == {(s, l) for s in ("none", "topq:0.25") for l in document["layers"]}
    # Keeping a quarter of the depthwise channels leaves fewer gradient directions.
    assert rows["topq:0.25", "_blocks.15._depthwise_conv"]["effective rank"] < \
        rows["none", "_blocks.15._depthwise_conv"]["effective rank"]
    stored = np.load(out / "gradients.npz")
    assert stored["topq:0.25/_conv_head/components"].shape == (2, 3, 7, 7)
    assert stored["none/_conv_head/pca_explained_variance_ratio"].shape == (2,)
    assert sorted(p.name for p in out.iterdir()) == ["chelsea.components.png", "coffee.components.png",
                                                      "gradients.npz", "spectrum.png"]
    code, _, err = run_cli(capsys, "analyze", asset_dir / "chelsea.jpg", "--figure-layer", "_fc", "--out", out)
    assert code == 2 and "not among the analysed layers" in err and len(err.strip().splitlines()) == 1


def test_analyze_streams_batches_skips_bad_images_and_keeps_finished_work(capsys, asset_dir, tmp_path, monkeypatch):
    import sipgrad.analysis

    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.jpg", "c.jpg"):
        shutil.copy(asset_dir / "chelsea.jpg", folder / name)
    (folder / "b.jpg").write_bytes(b"garbage")
    out = tmp_path / "out"
    args = ("analyze", folder, "--layers", "_conv_head", "--batch-size", "1", "--out", out, "--json")
    code, stdout, err = run_cli(capsys, *args)
    assert code == 1 and "b.jpg" in err  # the bad image is reported, the others analysed
    assert json.loads(stdout)["images"] == ["a.jpg", "c.jpg"]
    assert np.load(out / "gradients.npz")["none/_conv_head/effective_rank"].shape == (2,)

    monkeypatch.setattr(sipgrad.analysis, "analyze_gradients",
                        interrupted_on_call(sipgrad.analysis.analyze_gradients, 2))  # the second batch
    code, _, err = run_cli(capsys, *args[:-3], "--out", tmp_path / "cut")
    assert code == 130 and "wrote the 1 image(s) finished of 3" in err
    stored = np.load(tmp_path / "cut" / "gradients.npz")
    assert list(stored["names"]) == ["a.jpg"] and stored["none/_conv_head/singular_values"].shape[0] == 1


def test_ctrl_c_among_a_batchs_figures_keeps_that_batchs_numbers(capsys, asset_dir, tmp_path, monkeypatch):
    """The numbers of a batch are complete before its figures are drawn: a Ctrl-C there must not drop them."""
    import sipgrad.render.spectrum

    monkeypatch.setattr(sipgrad.render.spectrum, "save_components_figure",
                        interrupted_on_call(sipgrad.render.spectrum.save_components_figure, 2))
    out = tmp_path / "cut"
    code, _, err = run_cli(capsys, "analyze", asset_dir / "chelsea.jpg", asset_dir / "coffee.jpg", "--layers",
                           "_conv_head", "--batch-size", "2", "--out", out)
    assert code == 130 and "wrote the 2 image(s) finished of 2" in err
    assert list(np.load(out / "gradients.npz")["names"]) == ["chelsea.jpg", "coffee.jpg"]
    assert (out / "chelsea.components.png").is_file()


def test_ctrl_c_during_explain_reports_the_images_it_finished(capsys, asset_dir, tmp_path, monkeypatch):
    import sipgrad

    monkeypatch.setattr(sipgrad, "explain", interrupted_on_call(sipgrad.explain, 2))  # the second batch
    code, out, err = run_cli(capsys, "explain", asset_dir / "chelsea.jpg", asset_dir / "coffee.jpg",
                             "--batch-size", "1", "--out", tmp_path, "--json")
    assert code == 130
    document = json.loads(out)  # a whole JSON document, with the finished image's record
    assert [Path(r["image"]).name for r in document["results"]] == ["chelsea.jpg"]
    assert Path(document["results"][0]["overlay"]).is_file()
    assert err.strip().splitlines()[-1] == "sipgrad: interrupted; wrote the 1 image(s) finished of 2"


@pytest.mark.parametrize("args, message", [
    (["explain", "missing.png"], "missing.png: no such file"),
    (["explain", "{assets}/chelsea.jpg", "--target", "catt"], "did you mean"),
    (["explain", "{assets}/chelsea.jpg", "--sip", "cls"], "needs calibration statistics"),
    (["explain", "{assets}/chelsea.jpg", "--sip", "topq:2"], "SIP policy 'topq:2': fraction must be in (0, 1]"),
    (["explain", "{assets}/chelsea.jpg", "--sip", "pca:0"], "SIP policy 'pca:0': rank must be"),
    (["explain", "{assets}/chelsea.jpg", "--compare"], "--compare needs a SIP policy"),
    (["explain", "{assets}/chelsea.jpg", "--weights", "nothere.pth"], "nothere.pth: weights file not found"),
    (["explain", "{assets}/chelsea.jpg", "--device", "cuda:7"], "--device: device 'cuda:7': no cuda device"),
    (["hypergrad", "--steps", "1", "--hyper-steps", "1", "--device", "cuda:7"],
     "--device: device 'cuda:7': no cuda device"),
    (["calibrate", "--data", "nowhere", "--out", "x.npz"], "nowhere: no such folder or file list"),
    (["analyze", "{assets}/chelsea.jpg", "--layers", "_blocks.99"], "no layer named '_blocks.99'"),
])
def test_bad_input_gets_one_line_and_nonzero_exit(capsys, asset_dir, tmp_path, args, message):
    import torch

    if "cuda:7" in args and torch.cuda.is_available():
        pytest.skip("a CUDA device exists here")
    args = [a.format(assets=asset_dir) for a in args] + (["--out", str(tmp_path / "o")] if args[0] in ("explain", "analyze") else [])
    code, out, err = run_cli(capsys, *args)
    assert code == (1 if "missing.png" in args[1] else 2)  # 1: an image failed, 2: the command was refused
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_a_closed_stdout_stops_quietly():
    """`sipgrad ... | head`: when the reader goes away, no error line, the SIGPIPE status."""
    code = ("import sys\n"
            "from sipgrad_cli.common import guarded\n"
            "def write(args):\n"
            "    raise BrokenPipeError(32, 'Broken pipe')\n"
            "sys.exit(guarded(write)(None))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 141 and done.stderr == ""


def _subcommands():
    parser = build_parser()
    action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return list(action.choices)


@pytest.mark.parametrize("command", [None, *_subcommands()])
def test_every_help_is_complete(capsys, command):
    with pytest.raises(SystemExit) as info:
        main(["--help"] if command is None else [command, "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    parser = build_parser()
    if command is None:
        assert all(name in text for name in _subcommands()) and "--version" in text
        return
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices[command]
    for action in sub._actions:  # every option is listed with a help text
        for flag in action.option_strings:
            assert flag in text
        assert action.help, action.dest


def test_version_models_and_the_installed_command(capsys):
    import sipgrad

    code, out, _ = run_cli(capsys, "models")
    assert code == 0 and "efficientnet_lite0" in out and "yes" in out
    done = subprocess.run(["sipgrad", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == f"sipgrad {sipgrad.__version__}"
    assert subprocess.run([sys.executable, "-c", "import cli"], capture_output=True, cwd="/").returncode != 0


def test_cli_reference_doc_is_current():
    from pathlib import Path

    from sipgrad_cli.reference import render

    doc = Path(__file__).resolve().parents[2] / "docs" / "cli.md"
    assert doc.read_text() == render(), "regenerate: python -m sipgrad_cli.reference > docs/cli.md"


def test_cli_reference_covers_every_subcommand_level():
    """Commands with their own subcommands (fwdgrad train, gradients spectrum) get a section each, usage included."""
    from sipgrad_cli.reference import render

    text = render()
    for command in ("fwdgrad cosine", "fwdgrad train", "fwdgrad plot", "gradients spectrum", "gradients train"):
        assert f"### sipgrad {command}\n" in text and f"usage: sipgrad {command} " in text, command


def _help_of(*command: str) -> str:
    parser = build_parser()
    for name in command:  # walk down to the subcommand's own parser
        parser = next(a for a in parser._actions if isinstance(a, __import__("argparse")._SubParsersAction)
                      ).choices[name]
    return " ".join(parser.format_help().split())


def test_help_lists_what_the_registries_hold(monkeypatch):
    # A new SIP policy or direction sampler is one registry entry: the help text reads the registries.
    from sipgrad.engines.forward import samplers
    from sipgrad.hooks import policies

    class ThresholdPolicy(policies.ContributionPolicy):
        name = "thresh"

    monkeypatch.setitem(policies.POLICIES, "thresh", ThresholdPolicy)
    monkeypatch.setitem(samplers.SAMPLERS, "toysign", lambda _: samplers.RademacherSampler())
    for command in (("explain",), ("analyze",), ("evaluate",)):
        assert "none, cls, ins (need --stats), topq:Q, absq:Q, act:Q, pca:K, or thresh:Q" in _help_of(*command)
    assert "orthogonal, toysign, orthogonal:NAME" in _help_of("fwdgrad", "cosine")
    assert "orthogonal, toysign, orthogonal:NAME" in _help_of("fwdgrad", "train")


@pytest.mark.parametrize("parameter", list(__import__("sipgrad_cli.common").common.PARAMETER_FLAGS))
def test_every_library_parameter_becomes_its_own_flag(parameter):
    from sipgrad_cli.common import PARAMETER_FLAGS, as_flags

    # Each name on its own, and beside every other one: a name inside a longer one (batch_size in
    # internal_batch_size) must not be rewritten, and a flag once written must not be rewritten again.
    assert as_flags(f"{parameter} is bad") == f"{PARAMETER_FLAGS[parameter]} is bad"
    others = [p for p in PARAMETER_FLAGS if p != parameter]
    message = "; ".join([parameter, *others])
    assert as_flags(message) == "; ".join(PARAMETER_FLAGS[p] for p in [parameter, *others])
    assert as_flags(f"{parameter}.") == f"{PARAMETER_FLAGS[parameter]}."  # a sentence's end is no file name


@pytest.mark.parametrize("path", ["ig_steps/stats.npz", "runs/batch_size/x.pt", "data/layer_ratio.npz",
                                  "C:\\ig_steps\\s.npz", "./gradcam_layer"])
def test_a_parameter_name_inside_a_path_is_left_alone(path):
    from sipgrad_cli.common import as_flags

    assert as_flags(f"{path}: statistics file not found") == f"{path}: statistics file not found"


def test_python_evaluate_and_the_command_compute_the_same_records_by_default(capsys, tmp_path, lite0):
    # The command's IG and SmoothGrad defaults (32 steps, 16 samples) used to live in the CLI alone, so
    # evaluate(...) from Python ran 50 and 25 and gave other records for the same call.
    from sipgrad.evaluation import EvalSettings, builtin_cases, evaluate

    code, _, err = run_cli(capsys, "evaluate", "--builtin", "photos", "--limit", "1", "--steps", "0", "--method",
                           "ig,smoothgrad", "--out", tmp_path / "cli")
    assert code == 0, err
    cases = builtin_cases("photos", lite0.classes)[:1]
    settings = EvalSettings(methods=("ig", "smoothgrad"), steps=0)
    assert (settings.options.ig_steps, settings.options.smoothgrad_samples) == (32, 16)
    records = evaluate(lite0, cases, settings, tmp_path / "python", dataset="builtin:photos")
    by_command = [json.loads(line) for line in (tmp_path / "cli" / "records.jsonl").read_text().splitlines()]
    keys = ("config", "pointing", "energy", "mu_in")
    assert [{k: r[k] for k in keys} for r in records] == [{k: r[k] for k in keys} for r in by_command]
    identity = json.loads((tmp_path / "python" / "run.json").read_text())
    assert identity["method_options"] == json.loads((tmp_path / "cli" / "run.json").read_text())["method_options"]


def test_evaluate_takes_every_method_option_and_default_runs_keep_their_identity(capsys, tmp_path):
    # evaluate lacked --ig-baseline, --smoothgrad-noise, --internal-batch-size and --gradcam-layer. A run with
    # the defaults records what runs always recorded, so folders made before still resume.
    plain = tmp_path / "plain"
    code, _, _ = run_cli(capsys, "evaluate", "--builtin", "photos", "--limit", "1", "--steps", "0", "--out", plain)
    assert code == 0
    assert json.loads((plain / "run.json").read_text())["method_options"] == {"ig_steps": 32, "seed": 0,
                                                                               "smoothgrad_samples": 16}
    tuned = tmp_path / "tuned"
    code, _, _ = run_cli(capsys, "evaluate", "--builtin", "photos", "--limit", "1", "--steps", "0", "--method", "ig",
                         "--ig-steps", "2", "--ig-baseline", "noise", "--internal-batch-size", "4", "--out", tuned)
    assert code == 0
    assert json.loads((tuned / "run.json").read_text())["method_options"] == {
        "ig_baseline": "noise", "ig_steps": 2, "internal_batch_size": 4, "seed": 0, "smoothgrad_samples": 16}
    code, _, err = run_cli(capsys, "evaluate", "--builtin", "photos", "--limit", "1", "--steps", "0", "--method",
                           "gradcam", "--gradcam-layer", "nope", "--out", tmp_path / "layer")
    assert code == 2 and "--gradcam-layer: no layer named 'nope'" in err
