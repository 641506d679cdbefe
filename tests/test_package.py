"""The top-level package: subpackages load on first use, so that `import sipgrad` stays light."""

import subprocess
import sys

import pytest

import sipgrad


def test_subpackages_load_on_first_use_not_on_import():
    code = ("import sys, sipgrad; "
            "names = ('sipgrad.analysis', 'sipgrad.datasets', 'sipgrad.engines', 'sipgrad.evaluation'); "
            "before = [n for n in names if n in sys.modules]; "
            "used = (sipgrad.analysis.record_gradients, sipgrad.datasets.load_dataset, "
            "sipgrad.engines.hypergrad.forward_hypergradient, sipgrad.evaluation); "
            "print(before, [n for n in names if n in sys.modules] == list(names), 'analysis' in dir(sipgrad))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[] True True"


def test_an_unknown_attribute_is_still_an_attribute_error():
    with pytest.raises(AttributeError, match="has no attribute 'explian'"):
        sipgrad.explian  # noqa: B018
