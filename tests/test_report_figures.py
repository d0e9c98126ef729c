"""The report's figures and its self-contained HTML page, on a hand-made study folder."""

from __future__ import annotations

import base64
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from rltransfer.io_utils import atomic_write_json
from rltransfer.report import metrics
from rltransfer.report.build import (
    CURVES_SIZE,
    FIGURE_DPI,
    StudySummary,
    collect_runs,
    condition_colors,
    curves_figure,
    format_steps,
    metrics_figure,
    summarize_study,
)

THRESHOLD, RANDOM = 200.0, 20.0
# seeds evaluate at slightly different steps (rollout boundaries), as real runs may
RUNS = {
    "scratch": [([0, 100, 200, 300, 400], [20, 40, 60, 80, 100]),
                ([0, 100, 200, 300, 400], [20, 50, 80, 110, 140]),
                ([0, 100, 200, 300, 400], [20, 30, 40, 50, 60]),
                ([0, 100, 200, 300, 400], [20, 45, 70, 95, 120]),
                ([0, 100, 200, 300, 400], [20, 35, 50, 65, 80])],
    "finetune": [([0, 100, 200, 300, 400], [110, 200, 200, 200, 200]),
                 ([0, 100, 200, 300, 400], [100, 150, 200, 200, 200]),
                 ([0, 100, 200, 300, 400], [120, 200, 200, 200, 200]),
                 ([0, 100, 200, 300, 400], [105, 180, 200, 200, 200]),
                 ([0, 100, 200, 300, 400], [115, 200, 200, 200, 200])],
    "freeze-features": [([0, 100, 200, 300, 400], [20, 20, 20, 40, 40]),
                        ([0, 100, 200, 300, 400], [20, 30, 30, 30, 40]),
                        ([0, 100, 200, 300, 400], [20, 20, 30, 30, 30]),
                        ([0, 100, 200, 300, 400], [20, 25, 25, 35, 35]),
                        ([0, 100, 200, 300, 400], [20, 20, 25, 30, 40])],
}


def _study(tmp_path: Path, runs: dict = RUNS, *, write_run) -> Path:
    study = tmp_path / "study"
    atomic_write_json(study / "study.json", {
        "spec": {"source": {"id": "CartPole-v1", "params": {}},
                 "target": {"id": "CartPole-v1", "params": {"masspole": 0.5}}, "algo": "ppo",
                 "conditions": list(runs), "seeds": 5, "seed": 0, "timesteps": 400,
                 "source_timesteps": 1000, "eval_freq": 100, "eval_episodes": 5,
                 "out": str(tmp_path)},
        "target_agent": {"hparams": {"n_steps": 32}},
        "command": "python -m rltransfer run CartPole-v1 CartPole-v1:masspole=0.5 "
                   "--note https://example.org/x",
        "versions": {"python": "3.11", "matplotlib": "3.11"},
        "threshold": THRESHOLD, "threshold_from": "--threshold",
        "target_random_return": RANDOM})
    for condition, pairs in runs.items():
        for seed, (steps, returns) in enumerate(pairs):
            write_run(study / condition / f"seed_{seed}", steps, returns)
    return study


@pytest.fixture(scope="module")
def report(tmp_path_factory, write_run) -> tuple[Path, StudySummary]:
    study = _study(tmp_path_factory.mktemp("report"), write_run=write_run)
    return study, summarize_study(study)


def test_figures_are_images_of_the_expected_size(report):
    study, result = report
    curves = matplotlib.image.imread(study / "curves.png")
    assert curves.shape[:2] == (round(CURVES_SIZE[1] * FIGURE_DPI),
                                round(CURVES_SIZE[0] * FIGURE_DPI))
    panel = matplotlib.image.imread(study / "metrics.png")
    assert panel.shape[1] == 14 * FIGURE_DPI and panel.shape[0] > 2 * FIGURE_DPI
    profiles = matplotlib.image.imread(study / "profiles.png")
    assert profiles.shape[:2] == (round(5.2 * FIGURE_DPI), round(7.0 * FIGURE_DPI))
    svg = (study / "curves.svg").read_text()
    assert svg.startswith("<?xml") and "<svg" in svg and "</svg>" in svg


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.images: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        for name, value in attrs:
            if name in ("src", "href", "srcset", "action", "data"):
                (self.images if tag == "img" else self.links).append(value)


def test_html_page_is_self_contained(report):
    study, result = report
    page = (study / "report.html").read_text()
    parser = _Page()
    parser.feed(page)
    assert parser.links == []
    assert len(parser.images) == 3 and all(s.startswith("data:image/png;base64,")
                                           for s in parser.images)
    embedded = [base64.b64decode(s.split(",", 1)[1]) for s in parser.images]
    assert embedded == [(study / name).read_bytes()
                        for name in ("curves.png", "profiles.png", "metrics.png")]
    # the only http(s) text is inside the reproduce command
    command_block = page[page.index("<pre><code>"):page.index("</code></pre>")]
    assert "https://example.org/x" in command_block
    outside = page.replace(command_block, "")
    assert "http://" not in outside and "https://" not in outside
    assert "<style>" in page and "@import" not in page and "url(" not in page
    assert "badge positive" in page and "badge negative" in page
    assert "<code>masspole</code>: 0.1 → 0.5 kg" in page


def test_html_table_has_the_same_numbers_as_the_summary(report):
    study, result = report
    page = (study / "report.html").read_text()
    finetune = result.to_dict()["metrics"]["conditions"]["finetune"]
    for text in (metrics.format_estimate(finetune["jumpstart"], signed=True),
                 metrics.format_estimate(finetune["transfer_ratio"], signed=True),
                 metrics.format_estimate(finetune["auc_difference"], signed=True)):
        point, interval = text.split(" ", 1)
        assert f"{point} <span class=\"ci\">{interval}</span>" in page


def test_plotted_curves_are_the_means_over_seeds(report, tmp_path):
    study, result = report
    curves, _, _ = collect_runs(study, list(RUNS))
    fig = curves_figure(result, curves)
    score_ax, raw_ax = fig.axes
    colors = condition_colors(list(RUNS))
    for condition, pairs in RUNS.items():
        returns = np.array([r for _, r in pairs], dtype=float)
        label = f"{condition} (n=5)"
        raw = next(line for line in raw_ax.get_lines() if line.get_label() == label)
        np.testing.assert_array_equal(raw.get_xdata(), [0, 100, 200, 300, 400])
        np.testing.assert_allclose(raw.get_ydata(), returns.mean(axis=0))
        score = next(line for line in score_ax.get_lines() if line.get_label() == label)
        np.testing.assert_allclose(score.get_ydata(),
                                   ((returns - RANDOM) / (THRESHOLD - RANDOM)).mean(axis=0))
        assert raw.get_color() == score.get_color() == colors[condition]
    assert colors["scratch"] == "#3c3c3c"
    dashed = [line for line in score_ax.get_lines() if line.get_linestyle() == "--"]
    assert [line.get_ydata()[0] for line in dashed] == [1.0]
    dashed_raw = [line for line in raw_ax.get_lines() if line.get_linestyle() == "--"]
    assert [line.get_ydata()[0] for line in dashed_raw] == [THRESHOLD]
    assert score_ax.xaxis.get_major_formatter()(10_000) == "10k"
    assert format_steps(10_000) == "10k" and format_steps(1_500) == "1.5k"
    assert format_steps(2_000_000) == "2M" and format_steps(500) == "500"


def test_metrics_figure_marks_lower_bounds_and_censoring(report):
    _, result = report
    fig = metrics_figure(result)
    primary, jumpstart, speedup, gain, improve = fig.axes
    assert primary.get_title().startswith("PRIMARY: area vs scratch")
    # finetune reaches the threshold, scratch never does: the speedup is a lower bound,
    # drawn as a triangle, and its interval's upper end as an arrow (no measured bar end)
    sp = result.to_dict()["metrics"]["conditions"]["finetune"]["speedup"]
    assert sp["point_bound"] == ">" and sp["high_bound"] == ">"
    assert any(line.get_marker() == ">" for line in speedup.get_lines())
    assert len(speedup.texts) >= 1 and any(
        getattr(a, "arrow_patch", None) is not None for a in speedup.texts)
    # freeze-features never reaches it either: said in words, never drawn as a value
    texts = [" ".join(t.get_text().split()) for t in speedup.texts]  # wrapped lines joined
    assert "neither reaches the threshold" in texts
    assert texts.count("reference") == 1
    assert [line.get_xdata()[0] for line in jumpstart.get_lines()
            if line.get_linestyle() == "--"] == [0.0]
    assert [line.get_xdata()[0] for line in speedup.get_lines()
            if line.get_linestyle() == "--"] == [1.0]
    rows = {t.get_text(): t.get_position()[1] for t in primary.get_yticklabels()}
    assert rows == {"scratch": 2, "finetune": 1, "freeze-features": 0}  # study order, top down


def test_verdicts_of_the_hand_made_study(report):
    _, result = report
    conditions = result.to_dict()["metrics"]["conditions"]
    assert conditions["finetune"]["verdict"]["label"] == "positive transfer"
    assert conditions["freeze-features"]["verdict"]["label"] == "negative transfer"


def test_study_with_uneven_steps_is_plotted_on_the_common_grid(tmp_path, write_run):
    runs = {"scratch": [([0, 96, 192, 288, 400], [20, 40, 60, 80, 100]),
                        ([0, 100, 200, 300, 410], [20, 50, 80, 110, 140])],
            "finetune": [([0, 100, 200, 300, 400], [110, 200, 200, 200, 200]),
                         ([0, 100, 200, 300, 400], [100, 150, 200, 200, 200])]}
    study = _study(tmp_path, runs, write_run=write_run)
    result = summarize_study(study)
    curves, _, _ = collect_runs(study, list(runs))
    raw_ax = curves_figure(result, curves).axes[1]
    scratch = next(line for line in raw_ax.get_lines() if line.get_label() == "scratch (n=2)")
    np.testing.assert_array_equal(scratch.get_xdata(), [0, 96, 100, 192, 200, 288, 300, 400])
    first = np.interp(scratch.get_xdata(), *runs["scratch"][0])
    second = np.interp(scratch.get_xdata(), *runs["scratch"][1])
    np.testing.assert_allclose(scratch.get_ydata(), (first + second) / 2)
    assert (study / "report.html").is_file()
