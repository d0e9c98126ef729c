"""TensorBoard views: aggregate runs read back, the custom-scalars layout, the server."""

from __future__ import annotations

import socket
import urllib.request

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.hparams import plugin_data_pb2

from rltransfer.errors import OutputError
from rltransfer.report.board import (
    AGGREGATE_DIR,
    SERIES,
    series_tags,
    start_tensorboard,
    write_aggregates,
)

STEPS = np.array([0, 100, 200])


def _write(tmp_path):
    raw = {"scratch": (STEPS, np.array([10.0, 20, 30]), np.array([5.0, 15, 25]),
                       np.array([15.0, 25, 35])),
           "finetune": (STEPS, np.array([40.0, 60, 80]), np.array([35.0, 55, 75]),
                        np.array([45.0, 65, 85]))}
    normalized = {c: (s, m / 100, lo / 100, hi / 100) for c, (s, m, lo, hi) in raw.items()}
    return write_aggregates(tmp_path, raw, normalized, {"algo": "ppo", "seeds": 3},
                            {"finetune": {"jumpstart": 0.3}}, "| a | b |"), raw


def test_aggregate_runs_hold_mean_and_bounds(tmp_path):
    root, raw = _write(tmp_path)
    assert root == tmp_path / AGGREGATE_DIR
    for condition, (steps, mean, low, high) in raw.items():
        events = EventAccumulator(str(root / condition))
        events.Reload()
        for tag, values in (("mean", mean), ("low", low), ("high", high)):
            scalars = events.Scalars(f"aggregate/return/{tag}")
            assert [s.step for s in scalars] == list(steps)
            assert [s.value for s in scalars] == pytest.approx(list(values))
        normalized = events.Scalars("aggregate/normalized/mean")
        assert [s.value for s in normalized] == pytest.approx(list(mean / 100))


def test_custom_scalars_layout_names_every_condition(tmp_path):
    root, raw = _write(tmp_path)
    events = EventAccumulator(str(root), size_guidance={"tensors": 0})
    events.Reload()
    tensor = events.Tensors("custom_scalars__config__")[0].tensor_proto
    layout = layout_pb2.Layout.FromString(tensor.string_val[0])
    titles = [chart.title for category in layout.category for chart in category.chart]
    for condition in raw:
        assert any(title.startswith(f"{condition}:") for title in titles)
    margin = layout.category[0].chart[0].margin.series[0]
    assert (margin.value, margin.lower, margin.upper) == (
        "aggregate/return/mean", "aggregate/return/low", "aggregate/return/high")


def test_each_custom_scalars_chart_draws_exactly_its_conditions(tmp_path,
                                                                 custom_scalar_charts):
    root, raw = _write(tmp_path)
    charts = custom_scalar_charts(tmp_path)  # as `tensorboard --logdir runs/<study>`
    every = {f"{AGGREGATE_DIR}/{condition}" for condition in raw}
    assert set(charts[SERIES[0][1]]) == set(charts[SERIES[1][1]]) == every
    for condition, (_, mean, _, _) in raw.items():
        own = charts[f"{condition}: {SERIES[0][1]}"]
        assert list(own) == [f"{AGGREGATE_DIR}/{condition}"]  # that condition alone
        assert own[f"{AGGREGATE_DIR}/{condition}"] == pytest.approx(list(mean))
        assert charts[SERIES[0][1]][f"{AGGREGATE_DIR}/{condition}"] == pytest.approx(list(mean))


def test_per_condition_tags_carry_the_condition(tmp_path):
    root, raw = _write(tmp_path)
    for condition, (steps, mean, low, high) in raw.items():
        events = EventAccumulator(str(root / condition))
        events.Reload()
        own = [tag for tag in events.Tags()["scalars"] if condition in tag]
        assert sorted(own) == sorted(series_tags("aggregate/return", condition))
        for tag, values in zip(series_tags("aggregate/return", condition), (mean, low, high),
                               strict=True):
            assert [s.value for s in events.Scalars(tag)] == pytest.approx(list(values))
            assert [s.step for s in events.Scalars(tag)] == list(steps)


def test_summary_text_and_hparams_are_written_without_torch(tmp_path):
    import subprocess
    import sys

    root, _ = _write(tmp_path)
    events = EventAccumulator(str(root / "finetune"), size_guidance={"tensors": 0})
    events.Reload()
    assert events.Tensors("summary/text_summary")[0].tensor_proto.string_val == [b"| a | b |"]
    hparams = EventAccumulator(str(root / "finetune" / "hparams"),
                               size_guidance={"tensors": 0})
    hparams.Reload()
    assert {"_hparams_/experiment", "_hparams_/session_start_info",
            "_hparams_/session_end_info"} <= set(hparams.Tags()["tensors"])
    start = plugin_data_pb2.HParamsPluginData.FromString(hparams.SummaryMetadata(
        "_hparams_/session_start_info").plugin_data.content).session_start_info
    assert start.hparams["condition"].string_value == "finetune"
    assert start.hparams["seeds"].number_value == 3
    assert [s.value for s in hparams.Scalars("hparam/jumpstart")] == pytest.approx([0.3])
    code = ("import sys, pathlib, numpy as np\n"
            "from rltransfer.report.board import write_aggregates\n"
            "s = np.array([0, 1])\n"
            "write_aggregates(pathlib.Path(sys.argv[1]), {'scratch': (s, s, s, s)}, "
            "{'scratch': (s, s, s, s)}, {}, {}, 'x')\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "again")], check=True)


def test_rewriting_replaces_the_aggregate_runs(tmp_path):
    root, _ = _write(tmp_path)
    _write(tmp_path)
    events = EventAccumulator(str(root / "scratch"))
    events.Reload()
    assert len(events.Scalars("aggregate/return/mean")) == 3  # not 6


def test_tensorboard_server_and_a_taken_port(tmp_path):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    with pytest.raises(OutputError, match=f"port {port} is already in use"):
        start_tensorboard(tmp_path, port)
    taken.close()
    _, url = start_tensorboard(tmp_path, port)
    assert url.startswith("http://127.0.0.1:")
    assert urllib.request.urlopen(url, timeout=10).status == 200
    with pytest.raises(OutputError, match="does not exist"):
        start_tensorboard(tmp_path / "missing", port + 1)
