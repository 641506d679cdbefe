"""Progress moves per batch and names what is happening; stages without a bar get a line."""

import contextlib

import sipgrad_cli.explain_cmd
from sipgrad_cli.common import progress_bar
from sipgrad_cli.main import main


class RecordingBar:
    def __init__(self):
        self.events = []

    def update(self, count):
        self.events.append(("update", count))

    def set_postfix_str(self, text):
        self.events.append(("stage", text))

    def write(self, text, file=None):
        print(text, file=file)


def test_explain_moves_per_batch_and_says_what_it_does(capsys, monkeypatch, asset_dir, tmp_path):
    bar = RecordingBar()
    totals = []

    @contextlib.contextmanager
    def recording(total, description, **_):
        totals.append(total)
        yield bar

    monkeypatch.setattr(sipgrad_cli.explain_cmd, "progress_bar", recording)
    code = main(["explain", str(asset_dir / "chelsea.jpg"), str(asset_dir / "coffee.jpg"), str(tmp_path / "nope.jpg"),
                 "--batch-size", "2", "--out", str(tmp_path / "out")])
    capsys.readouterr()
    assert code == 1 and totals == [3]
    assert bar.events == [("stage", "batch 1/2: reading"), ("stage", "batch 1/2: explaining"),
                          ("stage", "batch 1/2: saving"), ("update", 2),
                          ("stage", "batch 2/2: reading"), ("update", 1),  # the unreadable image counts as done
                          ("stage", "done")]


def test_the_bar_is_drawn_only_on_a_terminal(capsys):
    with progress_bar(5, "x") as bar:  # pytest's captured stderr is not a terminal
        bar.update(5)
    assert capsys.readouterr().err == ""
