"""Shared fixtures: tiny budgets so the suite runs in minutes on 2 CPU cores."""

from __future__ import annotations

import pytest

from rltransfer.specs import AgentSpec
from rltransfer.training import algos

# PPO small enough that a few hundred steps take well under a second.
TINY_PPO = {"n_steps": 64, "batch_size": 64, "n_epochs": 2}


@pytest.fixture
def tiny_agent() -> AgentSpec:
    hparams = {**algos.preset("ppo", ["CartPole-v1"]), **TINY_PPO}
    return AgentSpec("ppo", hparams, n_envs=2, device="cpu")


@pytest.fixture
def interrupted_train_run(monkeypatch):
    """Train a run until its first checkpoint at or past 128 env steps, then interrupt it
    (KeyboardInterrupt, as Ctrl-C would), leaving the folder a resume continues from."""
    import rltransfer.training.run as training

    class StopAfterCheckpoint(training.EvaluationCallback):
        def __init__(self, *args, checkpoint, **kwargs):
            def save_then_stop() -> None:
                checkpoint()
                if self.model.num_timesteps >= 128:
                    raise KeyboardInterrupt
            super().__init__(*args, checkpoint=save_then_stop, **kwargs)

    def interrupted(run, run_dir, **kwargs) -> None:
        with monkeypatch.context() as patch:
            patch.setattr(training, "EvaluationCallback", StopAfterCheckpoint)
            with pytest.raises(KeyboardInterrupt):
                training.train_run(run, run_dir, **kwargs)

    return interrupted


@pytest.fixture
def training_calls(monkeypatch) -> list:
    """Every (run spec, run folder) that a study trains, recorded as the study runs
    (in this process: give the study --workers 1)."""
    import rltransfer.training.run as training

    calls: list = []
    real = training.train_run

    def counting(run, run_dir, **kwargs):
        calls.append((run, run_dir))
        return real(run, run_dir, **kwargs)

    monkeypatch.setattr(training, "train_run", counting)
    return calls


def _write_run(run_dir, steps, returns, state: str = "done") -> None:
    """A run folder as a study writes it: evaluations.csv and status.json."""
    import csv

    from rltransfer.io_utils import atomic_write_json
    from rltransfer.training.run import EVAL_COLUMNS

    run_dir.mkdir(parents=True)
    with open(run_dir / "evaluations.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(EVAL_COLUMNS)
        writer.writerows([s, r, 0, 5, 0] for s, r in zip(steps, returns, strict=True))
    atomic_write_json(run_dir / "status.json", {"state": state})


@pytest.fixture(scope="session")
def write_run():
    """Write a hand-made run folder (for report tests that need no training)."""
    return _write_run


def _custom_scalar_charts(logdir) -> dict[str, dict[str, list[float]]]:
    """What TensorBoard's CUSTOM SCALARS dashboard draws for `logdir`, through the plugin's own
    backend (layout route, scalars route): ``{chart title: {run: values of the series}}``.

    The frontend (tf-custom-scalar-margin-chart-card) asks the scalars route, for every run,
    for the tags matching one regex: each of the chart's value/lower/upper tags escaped, in
    parentheses, joined by "|"; a run's series is drawn when all three tags come back, and a
    run with some but not all of them is flagged "lacks data for tags" (an error here)."""
    import json
    import re

    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.custom_scalar import custom_scalars_plugin
    from tensorboard.plugins.scalar import scalars_plugin

    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    plugins: dict = {}
    tb = base_plugin.TBContext(
        logdir=str(logdir), multiplexer=multiplexer, plugin_name_to_instance=plugins,
        data_provider=data_provider.MultiplexerDataProvider(multiplexer, str(logdir)))
    for cls in (scalars_plugin.ScalarsPlugin, custom_scalars_plugin.CustomScalarsPlugin):
        plugin = cls(tb)
        plugins[plugin.plugin_name] = plugin
    custom, request = plugins["custom_scalars"], context.RequestContext()
    layout = json.loads(custom.layout_impl(request, ""))

    def escaped(tag: str) -> str:  # the frontend's _escapeRegexCharacters
        return re.sub(r"[.*+?^${}()|[\]\\]", lambda m: "\\" + m.group(0), tag)

    charts: dict[str, dict[str, list[float]]] = {}
    for category in layout["category"]:
        for chart in category["chart"]:
            series = chart["margin"]["series"]
            regex = "|".join(f"({escaped(s[key])})" for s in series
                             for key in ("value", "lower", "upper"))
            drawn: dict[str, list[float]] = {}
            for run in sorted(multiplexer.Runs()):
                body = custom.scalars_impl(request, run, regex, "")
                assert body["regex_valid"], regex
                for s in series:
                    found = [body["tag_to_events"].get(s[key])
                             for key in ("value", "lower", "upper")]
                    assert all(f is None for f in found) or None not in found, (
                        f"{chart['title']}: run {run} lacks some of {s}")
                    if None not in found:
                        drawn[run] = [event[2] for event in found[0]]
            charts[chart["title"]] = drawn
    return charts


@pytest.fixture(scope="session")
def custom_scalar_charts():
    """What TensorBoard's custom-scalars dashboard draws for a logdir (see above)."""
    return _custom_scalar_charts


@pytest.fixture
def one_thread():
    """One torch thread, as a study's workers train (--threads 1): tiny networks run faster
    so, and each run is repeatable. A module uses it with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
