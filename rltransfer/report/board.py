"""TensorBoard views of a study: per-condition aggregate runs, a custom-scalars layout, the
study's hyperparameters and its summary table; and starting TensorBoard on a study.

`runs/<study>/_aggregate/<condition>/` holds, at each evaluation step (target env steps),
the across-seed mean and the 95% interval bounds of the evaluation return, raw and
normalized. The custom-scalars layout (TensorBoard's Margin charts) shows every condition's
mean with its band in one chart, so transfer vs scratch reads at a glance, and each
condition alone in a chart of its own.

A Margin chart names exact tags and draws them from every run that has them, so each run
writes its series twice: under the shared tags (`aggregate/return/mean`, every run has
them: the all-conditions chart) and under tags that carry the condition
(`aggregate/return/<condition>/mean`, only that condition's run has them: its own chart).

The event files are written with TensorBoard's own writer and protos (no torch), so the
report stage runs without torch or Stable-Baselines3.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import OutputError

AGGREGATE_DIR = "_aggregate"
HPARAMS_RUN = "hparams"  # the sub-run of each aggregate run that holds its hparams
TEXT_TAG = "summary"  # the summary table, as a text summary (tag "summary/text_summary")
# (tag prefix, chart title) of the aggregate scalars
SERIES = (("aggregate/return", "evaluation return: mean and 95% CI over seeds"),
          ("aggregate/normalized", "normalized score (0 = random, 1 = threshold): mean and "
                                   "95% CI over seeds"))
SUCCESS_SERIES = ("aggregate/success_rate", "evaluation success rate (share of episodes that "
                                            "succeeded): mean and 95% CI over seeds")
"""Written where the runs recorded success rates (`rltransfer.training.success`)."""
ALL_CONDITIONS = "transfer vs scratch (all conditions)"
PER_CONDITION = "conditions"

Aggregate = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # steps, mean, low, high


def series_tags(prefix: str, condition: str | None = None) -> tuple[str, str, str]:
    """(mean, low, high) tags of a series: shared by every aggregate run, or, with
    `condition`, written only by that condition's run."""
    base = prefix if condition is None else f"{prefix}/{condition}"
    return f"{base}/mean", f"{base}/low", f"{base}/high"


def layout(conditions: Iterable[str], success: bool = False) -> Any:
    """The custom-scalars layout (a `layout_pb2.Layout`): one Margin chart per series over the
    shared tags, which every condition's aggregate run has (so the chart draws each
    condition's band), and one chart per condition over the tags only its run has."""
    from tensorboard.plugins.custom_scalar import layout_pb2

    def margin(title: str, tags: tuple[str, str, str]) -> Any:
        value, lower, upper = tags
        return layout_pb2.Chart(title=title, margin=layout_pb2.MarginChartContent(
            series=[layout_pb2.MarginChartContent.Series(value=value, lower=lower,
                                                          upper=upper)]))

    series = SERIES + ((SUCCESS_SERIES,) if success else ())
    shared = [margin(title, series_tags(prefix)) for prefix, title in series]
    own = [margin(f"{condition}: {title}", series_tags(prefix, condition))
           for condition in conditions for prefix, title in series
           if prefix != SERIES[1][0]]
    return layout_pb2.Layout(category=[layout_pb2.Category(title=ALL_CONDITIONS, chart=shared),
                                       layout_pb2.Category(title=PER_CONDITION, chart=own)])


def write_aggregates(study_dir: Path, raw: Mapping[str, Aggregate],
                     normalized: Mapping[str, Aggregate], hparams: Mapping[str, Any],
                     metrics: Mapping[str, Mapping[str, float]], table_markdown: str,
                     success: Mapping[str, Aggregate] | None = None) -> Path:
    """Write `_aggregate/<condition>` runs (replacing earlier ones) and return the folder;
    `success`: each condition's success-rate aggregate, where the runs recorded one."""
    root = study_dir / AGGREGATE_DIR
    shutil.rmtree(root, ignore_errors=True)  # regenerated from the files, never appended to
    for condition, series in raw.items():
        with _Writer(root / condition) as writer:
            written = [(SERIES[0], series), (SERIES[1], normalized[condition])]
            if success is not None and condition in success:
                written.append((SUCCESS_SERIES, success[condition]))
            for (prefix, _), values in written:
                shared = series_tags(prefix)
                own = series_tags(prefix, condition) if prefix != SERIES[1][0] else None
                for step, *point in zip(*values, strict=True):
                    for tags in (shared, own):
                        if tags is not None:
                            writer.scalars(int(step), zip(tags, point, strict=True))
            writer.summary(_text_summary(TEXT_TAG, table_markdown))
        scores = {f"hparam/{k}": v for k, v in metrics.get(condition, {}).items()}
        with _Writer(root / condition / HPARAMS_RUN) as writer:
            for summary in _hparams_summaries({**_flat(hparams), "condition": condition},
                                              scores):
                writer.summary(summary)
            writer.scalars(0, scores.items())
    with _Writer(root) as writer:
        writer.summary(_layout_summary(layout(raw, success is not None)))
    return root


def quiet_writer_threads() -> None:
    """Leave out the traceback of TensorBoard's event-writer thread when a write fails (a
    full or read-only disk): the thread keeps the error and the next write or flush raises
    it in the thread that writes, which handles it (a run fails with it in one line).
    Other threads' tracebacks print as before. Idempotent."""
    previous = threading.excepthook
    if getattr(previous, "quiet_writer_threads", False):
        return

    def hook(args: Any) -> None:
        if type(args.thread).__name__ == "_AsyncWriterThread" and \
                isinstance(args.exc_value, OSError):
            return
        previous(args)

    hook.quiet_writer_threads = True  # type: ignore[attr-defined]
    threading.excepthook = hook


class _Writer:
    """One event file in `logdir`, written with TensorBoard's own EventFileWriter; an OSError
    names `logdir`."""

    def __init__(self, logdir: Path) -> None:
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        quiet_writer_threads()
        self._logdir = logdir
        with self._naming():
            self._file = EventFileWriter(str(logdir))

    def __enter__(self) -> _Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        with self._naming():
            self._file.close()

    @contextmanager
    def _naming(self) -> Iterator[None]:
        try:
            yield
        except OSError as err:
            if err.filename is not None or err.errno is None:
                raise
            raise OSError(err.errno, err.strerror, str(self._logdir)) from None

    def summary(self, summary: Any, step: int = 0) -> None:
        from tensorboard.compat.proto import event_pb2

        with self._naming():
            self._file.add_event(event_pb2.Event(wall_time=time.time(), step=step,
                                                 summary=summary))

    def scalars(self, step: int, values: Iterable[tuple[str, float]]) -> None:
        """Scalars as the scalars dashboard reads them (`simple_value`), in one event."""
        from tensorboard.compat.proto import summary_pb2

        self.summary(summary_pb2.Summary(value=[
            summary_pb2.Summary.Value(tag=tag, simple_value=float(value))
            for tag, value in values]), step)


def _string_tensor(data: bytes, shape: tuple[int, ...]) -> Any:
    from tensorboard.compat.proto import tensor_pb2, tensor_shape_pb2, types_pb2

    return tensor_pb2.TensorProto(
        dtype=types_pb2.DT_STRING, string_val=[data],
        tensor_shape=tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=size) for size in shape]))


def _text_summary(name: str, text: str) -> Any:
    """A text-plugin summary (tag `<name>/text_summary`, as `SummaryWriter.add_text` writes)."""
    from tensorboard.compat.proto import summary_pb2
    from tensorboard.plugins.text import metadata

    return summary_pb2.Summary(value=[summary_pb2.Summary.Value(
        tag=f"{name}/text_summary", tensor=_string_tensor(text.encode("utf-8"), (1,)),
        metadata=metadata.create_summary_metadata(display_name=name, description=""))])


def _layout_summary(layout_proto: Any) -> Any:
    """The custom-scalars config summary (tag `custom_scalars__config__`)."""
    from tensorboard.compat.proto import summary_pb2
    from tensorboard.plugins.custom_scalar import metadata

    return summary_pb2.Summary(value=[summary_pb2.Summary.Value(
        tag=metadata.CONFIG_SUMMARY_TAG, tensor=_string_tensor(layout_proto.SerializeToString(),
                                                               ()),
        metadata=metadata.create_summary_metadata())])


def _hparams_summaries(hparams: Mapping[str, Any], scores: Mapping[str, float]) -> list[Any]:
    """The hparams plugin's three summaries: the experiment (hyperparameters with their
    types, and the metric tags), this session's values, and its end (success)."""
    from tensorboard.compat.proto import summary_pb2
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2, summary_v2

    def typed(value: Any) -> int:
        if isinstance(value, bool):
            return api_pb2.DATA_TYPE_BOOL
        return api_pb2.DATA_TYPE_FLOAT64 if isinstance(value, int | float) else (
            api_pb2.DATA_TYPE_STRING)

    def summary(tag: str, data: Any) -> Any:
        return summary_pb2.Summary(value=[summary_pb2.Summary.Value(
            tag=tag, metadata=metadata.create_summary_metadata(data),
            tensor=metadata.NULL_TENSOR)])

    experiment = api_pb2.Experiment(
        hparam_infos=[api_pb2.HParamInfo(name=k, type=typed(v)) for k, v in hparams.items()],
        metric_infos=[api_pb2.MetricInfo(name=api_pb2.MetricName(tag=k)) for k in scores])
    end = plugin_data_pb2.SessionEndInfo(status=api_pb2.STATUS_SUCCESS)
    return [summary(metadata.EXPERIMENT_TAG, plugin_data_pb2.HParamsPluginData(
                experiment=experiment)),
            summary_v2.hparams_pb(dict(hparams)),
            summary(metadata.SESSION_END_INFO_TAG, plugin_data_pb2.HParamsPluginData(
                session_end_info=end))]


def _flat(data: Mapping[str, Any]) -> dict[str, Any]:
    """hparams values must be numbers, strings or booleans."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        flat[key] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return flat


def start_tensorboard(logdir: Path, port: int) -> tuple[Any, str]:
    """Start TensorBoard on loopback for `logdir`; return (the server, its URL)."""
    from tensorboard import program

    if not logdir.is_dir():
        raise OutputError(f"{logdir} does not exist: give runs/<study> or the runs folder")
    board = program.TensorBoard()
    board.configure(argv=[None, "--logdir", str(logdir), "--host", "127.0.0.1",
                          "--port", str(port)])
    try:
        url = board.launch()
    except program.TensorBoardPortInUseError:
        raise OutputError(f"port {port} is already in use (another TensorBoard?): "
                          f"pass --port N with a free port") from None
    return board, url
