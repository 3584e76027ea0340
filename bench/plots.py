"""The two figures of issue 5: TTFC distributions overlaid (one per scenario), CPU per chunk bars."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on a benchmark box
import matplotlib.pyplot as plt  # noqa: E402

# One colour per target in every figure.
COLORS = {"direct": "C7", "moonrelay": "C0", "nginx": "C1", "litellm": "C2", "openai-forward": "C3",
          "litellm-tuned": "C8", "openai-forward-tuned": "C6", "moonrelay-quiet": "C9"}


def ttfc_cdf(title: str, samples: dict[str, list[float]], path: Path) -> None:
    """Empirical CDFs rather than histograms: overlaid histograms hide each other, CDFs do not."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for target, values in samples.items():
        if not values:
            continue
        xs = sorted(values)
        ys = [(i + 1) / len(xs) for i in range(len(xs))]
        ax.step(xs, ys, where="post", label=f"{target} (n={len(xs):,})", color=COLORS.get(target))
    # Log scale: a saturated peer's tail (100 s) would otherwise squash the others into one line.
    ax.set_xscale("log")
    ax.set_xlabel("time to first chunk, ms (from intended start; log scale)")
    ax.set_ylabel("fraction of sessions")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if any(samples.values()):
        ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def cpu_bars(values: dict[str, dict[str, float]], targets: list[str], path: Path) -> None:
    """``values[scenario][target]`` = CPU µs per relayed chunk; grouped bars, one group per scenario."""
    scenarios = list(values)
    shown = [t for t in targets if any(t in values[s] for s in scenarios)]
    fig, ax = plt.subplots(figsize=(max(6, 2.5 * len(scenarios) + 2), 4.5))
    width = 0.8 / max(1, len(shown))
    for i, target in enumerate(shown):
        pairs = [(j + i * width, values[s][target]) for j, s in enumerate(scenarios) if values[s].get(target)]
        bars = ax.bar([x for x, _ in pairs], [y for _, y in pairs], width, label=target, color=COLORS.get(target))
        ax.bar_label(bars, fmt="%.0f", fontsize=8)
    # Log scale: nginx (~10-50 µs) and LiteLLM (~1,000s of µs) differ by 100x and both must stay readable.
    ax.set_yscale("log")
    ax.set_xticks([j + width * (len(shown) - 1) / 2 for j in range(len(scenarios))], scenarios)
    ax.set_ylabel("proxy CPU µs per relayed chunk (median)")
    ax.grid(axis="y", alpha=0.3)
    if shown:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
