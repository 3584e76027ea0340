"""loadtest's three plots from a small result.json: the palette's colours, axes from zero, the legend outside the
data, and titles that say what is drawn, in which unit, for which command on which machine."""

from matplotlib.colors import to_hex

from loadtest import plots
from loadtest.palette import NEUTRAL, color

RESULT = {
    "command_line": "loadtest --concurrency 3 --baseline",
    "machine": {"cpus": 16, "python": "CPython 3.12.0"},
    "histograms": {"ttfc_ms": {"edges": [0.0, 50.0, 100.0, 150.0], "scale": "linear",
                               "counts": {"relay": [1, 4, 2], "direct": [3, 2, 0]}}},
    "series": {"open_sessions": [[0.0, 1], [1.0, 3], [2.0, 0]], "open_sessions_step_s": 1.0,
               "chunks_per_s": [[0.0, 10], [1.0, 30], [2.0, 5]], "chunks_per_s_step_s": 1.0},
}


def _legend_outside(fig, legend, axes) -> bool:
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box = legend.get_window_extent(renderer)
    return not any(box.overlaps(ax.get_window_extent(renderer)) for ax in axes)


def _keep_figures(monkeypatch) -> list:
    """The figures the plots save (they still write their files): the functions return paths, not figures."""
    saved, real = [], plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, path: saved.append(fig) or real(fig, path))
    return saved


def test_ttfc_plot_uses_the_palette_starts_at_zero_and_keeps_its_legend_off_the_bars(tmp_path, monkeypatch):
    saved = _keep_figures(monkeypatch)
    plots.plot_ttfc(RESULT, tmp_path / "ttfc.png")
    [fig] = saved
    ax, cdf_ax = fig.axes
    assert ax.get_ylim()[0] == 0 and ax.get_yscale() == "linear" and cdf_ax.get_ylim() == (0, 1.02)
    bars = {p.get_label().split(" ")[0]: to_hex(p.get_facecolor()[:3]) for p in ax.patches}
    assert bars == {"relay": color("relay"), "direct": color("direct")} and color("relay") != color("direct")
    assert [to_hex(line.get_color()) for line in cdf_ax.get_lines()] == [color("relay"), color("direct")]
    [legend] = fig.legends
    assert _legend_outside(fig, legend, [ax, cdf_ax])
    assert "ms" in ax.get_xlabel() and ax.get_ylabel()
    title = fig.get_suptitle()
    assert "Time to first chunk, ms" in title and "loadtest --concurrency 3" in title and "16 CPUs" in title


def test_series_plots_start_at_zero_with_unit_and_context_in_the_title(tmp_path, monkeypatch):
    saved = _keep_figures(monkeypatch)
    plots.plot_open_sessions(RESULT, tmp_path / "open.png")
    plots.plot_chunks_per_s(RESULT, tmp_path / "chunks.png")
    for fig, unit in zip(saved, ("count", "chunks/s"), strict=True):
        [ax] = fig.axes
        assert ax.get_ylim()[0] == 0 and ax.get_yscale() == "linear"
        assert [to_hex(line.get_color()) for line in ax.get_lines()] == [NEUTRAL]  # a whole run, not one target
        assert unit in fig.get_suptitle() and "16 CPUs" in fig.get_suptitle() and ax.get_xlabel()


def test_write_plots_writes_three_pngs(tmp_path):
    paths = plots.write_plots(RESULT, tmp_path)
    assert [p.name for p in paths] == ["ttfc_distribution.png", "open_sessions.png", "chunks_per_s.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in paths)
