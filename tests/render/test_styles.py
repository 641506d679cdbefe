"""Series styles: every (method, SIP) config drawn distinctly."""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib.colors import to_rgb

from sipgrad.render.styles import series_styles


def test_twelve_configs_get_twelve_clearly_different_colours():
    pairs = [(m, s) for m in ("grad", "ig", "gradcam") for s in ("none", "topq:0.1", "topq:0.25", "absq:0.25")]
    styles = series_styles(pairs)
    # The two configs tab10's default cycle drew in the same orange.
    assert styles[("grad", "topq:0.1")].color != styles[("gradcam", "absq:0.25")].color
    colours = [np.array(to_rgb(styles[p].color)) for p in pairs]
    closest = min(np.abs(a - b).max() for a, b in itertools.combinations(colours, 2))
    assert closest > 0.08  # at least ~20 of 255 levels apart in some channel
    # Shades of one hue per method; markers and dashes per SIP setting.
    assert styles[("grad", "none")].marker == styles[("ig", "none")].marker != styles[("grad", "topq:0.1")].marker
    assert styles[("grad", "none")].linestyle != styles[("grad", "topq:0.1")].linestyle


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 10), st.integers(1, 6))
def test_every_pair_is_unique_for_any_grid(methods, sips):
    pairs = [(f"m{i}", f"s{j}") for i in range(methods) for j in range(sips)]
    styles = series_styles(pairs)
    assert len({styles[p].color for p in pairs}) == len(pairs)


def test_one_group_gets_tab10_hues():
    from sipgrad.render.styles import series_styles
    styles = series_styles([("sip", "plain"), ("sip", "topq:0.25"), ("sip", "topq:0.5")])
    assert [s.color for s in styles.values()] == ["#1f77b4", "#ff7f0e", "#2ca02c"]


def test_first_variant_is_a_darker_shade():
    from sipgrad.render.styles import series_styles
    styles = series_styles([("grad", "a"), ("grad", "b"), ("ig", "a"), ("ig", "b")])
    assert styles[("grad", "a")].color == "#144d75" and styles[("ig", "b")].color == "#ffb97a"
