"""Every figure bench draws, from small fixtures: bars linear from zero (split into panels, not a log axis, where
values are orders of magnitude apart), one palette colour per target, labels and titles that say what and where,
legends outside the data."""

from matplotlib.colors import to_hex

from bench import plots
from bench.peers import TARGETS
from loadtest.palette import ALIASES, COLORS, color

MACHINE = "2 cores, Test CPU, 1.0 GiB"


def _outside(fig, legend, axes):
    """The legend's box overlaps no axes' box (drawn, in display pixels)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box = legend.get_window_extent(renderer)
    return not any(box.overlaps(ax.get_window_extent(renderer)) for ax in axes)


def _bars(ax):
    """(target, value, colour) of each horizontal bar in ``ax``, top to bottom; the target from its tick label."""
    names = [t.get_text().split("\n")[0] for t in ax.get_yticklabels()]
    return [(name, p.get_width(), to_hex(p.get_facecolor())) for name, p in zip(names, ax.patches, strict=True)][::-1]


def test_every_target_has_its_own_colour():
    assert set(TARGETS) <= set(COLORS), "a bench target without a fixed colour"
    assert len(set(COLORS.values())) == len(COLORS), "two targets share a colour"
    assert color("relay") == color(ALIASES["relay"]) == COLORS["moonrelay"]
    assert color("some-new-peer") not in COLORS.values() and color("some-new-peer") == color("some-new-peer")


def test_split_groups_keeps_values_within_one_order_of_magnitude():
    values = {"moonrelay": 51.5, "nginx": 18.6, "litellm": 770.8, "openai-forward": 147.5}
    assert plots.split_groups(values) == [["moonrelay", "nginx", "openai-forward"], ["litellm"]]
    assert plots.split_groups({"a": 1.0, "b": 9.9}) == [["a", "b"]]
    assert plots.split_groups({}) == []


def test_cpu_bars_are_linear_from_zero_split_where_orders_apart_and_labelled(tmp_path):
    values = {"token-rate": {"moonrelay": 51.5, "nginx": 18.6, "moonrelay-nopump": 60.8, "litellm": 770.8},
              "ceiling": {"moonrelay": 35.7, "nginx": 15.1}}
    fig = plots.cpu_bars(values, list(TARGETS), tmp_path / "cpu.png", machine=MACHINE,
                         repeats={"token-rate": 3, "ceiling": 1})
    assert (tmp_path / "cpu.png").read_bytes().startswith(b"\x89PNG")
    token_rate, ceiling = fig.subfigs
    near, far = token_rate.axes  # litellm is 41× nginx: a panel of its own, not a log axis
    assert [t for t, _, _ in _bars(near)] == ["moonrelay", "nginx", "moonrelay-nopump"]
    assert [t for t, _, _ in _bars(far)] == ["litellm"]
    assert len(ceiling.axes) == 1
    for ax in (near, far, *ceiling.axes):
        assert ax.get_xscale() == "linear" and ax.get_xlim()[0] == 0
        assert ax.get_legend() is None  # labelled on the axis: no legend to cover a bar
        assert all(colour == COLORS[t] for t, _, colour in _bars(ax))
        assert "µs" in ax.get_xlabel() and "from 0" in ax.get_xlabel()
    assert [(t, v) for t, v, _ in _bars(near)] == [("moonrelay", 51.5), ("nginx", 18.6), ("moonrelay-nopump", 60.8)]
    labels = [t.get_text() for t in near.texts]
    assert "51.5 µs · 2.77× nginx" in labels and "18.6 µs" in labels
    assert "own scale" in far.get_title(loc="right")
    assert MACHINE in fig.get_suptitle() and "µs" in fig.get_suptitle()
    assert token_rate.get_suptitle() == "token-rate, median of 3 repeats"


def test_ttfc_cdf_has_palette_lines_a_legend_outside_and_says_its_scale(tmp_path):
    samples = {"direct": [1000.0 + i for i in range(50)], "moonrelay": [1010.0 + i for i in range(50)],
               "nginx": [1005.0 + 2 * i for i in range(50)]}
    fig = plots.ttfc_cdf(f"token-rate: time to first chunk, ms\n{MACHINE}", samples, tmp_path / "ttfc.png")
    [ax] = fig.axes
    assert [to_hex(line.get_color()) for line in ax.get_lines()] == [COLORS[t] for t in samples]
    assert ax.get_xscale() == "linear" and "log" not in ax.get_xlabel() and "ms" in ax.get_xlabel()
    assert ax.get_ylim()[0] == 0
    [legend] = fig.legends
    assert _outside(fig, legend, [ax])
    assert "token-rate" in fig.get_suptitle() and MACHINE in fig.get_suptitle()
    # A saturated peer's 100-s tail beside 1-s first chunks: a log axis, and the label says so.
    samples["litellm"] = [1000.0 * (i + 1) for i in range(100)]
    [ax] = plots.ttfc_cdf("t", samples, tmp_path / "ttfc2.png").axes
    assert ax.get_xscale() == "log" and "log scale" in ax.get_xlabel()


def test_bar_rows_draw_the_goal_in_the_panel_that_holds_it(tmp_path):
    row = plots.Bars("relay-cost", {"moonrelay": 5.1, "nginx": 1.0, "litellm": 45.3},
                     ticks={"litellm": "litellm\n(run of 2026-12-04)"}, goal=2.5, goal_label="goal ≤ 2.5×")
    fig = plots.bar_rows([row], "Proxy CPU ÷ nginx's", "× nginx (linear, from 0)", tmp_path / "s.png")
    near, far = fig.axes
    assert [line.get_xdata()[0] for line in near.get_lines()] == [2.5]
    assert far.get_lines() == []  # not at 2.5 on a 0-70 scale, where it would sit on the axis
    assert [t.get_text() for t in far.get_yticklabels()] == ["litellm\n(run of 2026-12-04)"]


def test_trend_panels_start_at_zero_with_the_legend_outside(tmp_path):
    panel = plots.Panel("token-rate: proxy CPU ÷ nginx's", ["12-04 20:34\nabc\nCPU", "12-05 12:12\ndef\nCPU"],
                        [plots.Series("moonrelay", [3.02, 2.77]), plots.Series("moonrelay-nopump", [None, 3.27]),
                         plots.Series("nginx", [1.0, 1.0])], goal=2.0, goal_label="goal ≤ 2×")
    fig = plots.trend([panel], "moonrelay's CPU ÷ nginx's", "× nginx (linear, from 0)", tmp_path / "t.png")
    [ax] = fig.axes
    assert ax.get_yscale() == "linear" and ax.get_ylim()[0] == 0
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert to_hex(lines["moonrelay"].get_color()) == COLORS["moonrelay"]
    assert list(lines["moonrelay-nopump"].get_xdata()) == [1]  # a run without it leaves a gap, not a zero
    assert list(lines["goal ≤ 2×"].get_ydata()) == [2.0, 2.0]
    assert _outside(fig, ax.get_legend(), [ax])
    assert [t.get_text() for t in ax.get_xticklabels()] == panel.ticks
