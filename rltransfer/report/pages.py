"""The report's pages: report.md and the self-contained report.html, rendered from the
Jinja2 templates in rltransfer/templates/ (report.md.j2, report.html.j2).

This module prepares what the pages say (what was compared, the verdicts, the table, the
figures, how to reproduce it); the templates lay it out. HTML templates are autoescaped
(markdown ones are not); the filters are `md_text` (literal markdown), `inline` (markdown
`code` spans as <code>) and `interval` (a table cell that never wraps inside an interval).
"""

from __future__ import annotations

import base64
import html
import json
import re
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from ..errors import RLTransferError
from ..study.budgets import describe_grid
from .metrics import format_p
from .summary import EvaluationGrid, StudySummary, Verdict
from .tables import NO_METRICS, headers, markdown_table, table_note, table_rows, without_metrics
from .verdict import FAILED_RUNS, MIXED, NEGATIVE, NO_CLEAR, POSITIVE, REFERENCE


def report_markdown(result: StudySummary, study: dict[str, Any]) -> str:
    """report.md: what was compared, verdicts, the table with intervals, the figures, and how
    to reproduce it."""
    return _ENV.get_template("report.md.j2").render(
        **_page(result, study), metrics_table=markdown_table(result))


def report_html(result: StudySummary, study: dict[str, Any],
                images: Mapping[str, bytes]) -> str:
    """report.html: report.md's content as one self-contained page (inline CSS, the figures
    as base64 PNG data URIs, no external resources)."""
    rows = []
    for row in table_rows(result):
        label = row[-1][1:-1] if row[-1] == f"({REFERENCE})" else row[-1]
        rows.append({"name": row[0], "cells": row[1:-1], "label": label,
                     "css": _verdict_class(label)})
    figures = [{"caption": caption, "data": base64.b64encode(images[name]).decode("ascii")}
               for name, caption in _FIGURE_CAPTIONS.items() if name in images]
    return _ENV.get_template("report.html.j2").render(
        **_page(result, study), headers=headers(result), rows=rows, figures=figures)


def _page(result: StudySummary, study: dict[str, Any]) -> dict[str, Any]:
    """What both pages show, ready to lay out."""
    return {
        "result": result, "warnings_title": _WARNINGS_TITLE,
        "warnings": list(result.warnings), "description": _description(result, study),
        "similarity": similarity_items(result),
        "verdicts": [{"name": name, "label": verdict.label, "reading": _reading(verdict),
                      "css": _verdict_class(verdict.label)}
                     for name, verdict in _verdicts(result)],
        "no_verdicts": _NO_VERDICTS, "seed_note": result.seed_note,
        "looks": _looks(result),
        "table_note": table_note(result.alpha, len(headers(result)) > len(headers())),
        "captions": _FIGURE_CAPTIONS,
        "command": study.get("command"), "tensorboard": _tensorboard_command(result, study),
    }


# --------------------------------------------------------------------------- templates

_TEMPLATES = Path(__file__).parent.parent / "templates"


@jinja2.pass_eval_context
def _finalize(eval_ctx: jinja2.nodes.EvalContext, value: Any) -> Any:
    """In an autoescaped template, escape every value as `html.escape` does (&quot;, &#x27;),
    as the page did before it had templates; markup (the filters' output) is kept."""
    if eval_ctx.autoescape and not hasattr(value, "__html__"):
        return Markup(_esc(value))
    return value


def _md_text(text: str) -> str:
    """`text` as literal markdown: backslash-escape what would become code, emphasis, links
    or HTML (an error message may hold any of them)."""
    return re.sub(r"([\\`*<>\[\]])", r"\\\1", text)


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _inline(text: str) -> Markup:
    """Escape `text`, turning markdown `code` spans into <code> elements."""
    parts = text.split("`")
    return Markup("".join(f"<code>{_esc(p)}</code>" if i % 2 else _esc(p)
                          for i, p in enumerate(parts)))


def _interval_cell(text: str) -> Markup:
    """Escaped cell text that may wrap before an interval but never inside one."""
    return Markup(_esc(text).replace("[", "<span class=\"ci\">[").replace("]", "]</span>"))


_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(_TEMPLATES),
    autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",),
                                        default_for_string=False),
    undefined=jinja2.StrictUndefined, finalize=_finalize,
    keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)
_ENV.filters.update(md_text=_md_text, inline=_inline, interval=_interval_cell)


# --------------------------------------------------------------------------- content

_FIGURE_CAPTIONS = {
    "curves.png": "Learning curves on the target: mean over seeds per condition, shaded t "
                  "interval of the mean; left normalized (0 = random, 1 = threshold), "
                  "right raw returns.",
    "profiles.png": "Performance profiles: the fraction of runs whose final normalized score "
                    "exceeds each value, with exact pointwise bands.",
    "metrics.png": "The primary claim (area vs scratch) and the descriptive effects: point "
                   "estimates and intervals over seeds; bounds and censored values are drawn "
                   "as arrows, never as measured bars.",
}


_NO_VERDICTS = "No condition besides scratch: nothing to judge."
NO_VERDICT = "no verdict"


def _verdicts(result: StudySummary) -> list[tuple[str, Verdict]]:
    """(condition, verdict) of every condition compared with the reference, and "no verdict"
    for every condition without finished runs."""
    verdicts = [(name, data.verdict) for name, data in result.conditions.items()
                if data.verdict is not None and data.verdict.label != REFERENCE]
    verdicts += [(name, Verdict(NO_VERDICT, f"No metrics: {why}, so there is nothing to "
                                            "judge."))
                 for name, why in without_metrics(result).items()]
    return verdicts


_WARNINGS_TITLE = "⚠ Warnings"


def _reading(verdict: Verdict) -> str:
    """The one-line reading, then the reason when it adds to it."""
    reading, reason = verdict.reading, verdict.reason
    if not reading:
        return reason
    claim = reading.partition("; ")[2]  # the reading ends with the area's claim: say it once
    if claim:
        for said, shorter in ((f": {claim}, at most", ", Holm p at most"),
                              (f" ({claim})", ""), (f": {claim}.", ".")):
            reason = reason.replace(said, shorter)
    return f"{reading[0].upper()}{reading[1:]}. {reason}"


def _tensorboard_command(result: StudySummary, study: dict[str, Any]) -> str:
    """The command that serves the study's curves (rltransfer's own: no `tensorboard` script
    needs to be on PATH)."""
    folder = Path(study["spec"]["out"]) / result.study
    return f"python -m rltransfer tensorboard {shlex.quote(str(folder))}"


_VERDICT_CLASSES = {POSITIVE: "positive", NEGATIVE: "negative", NO_CLEAR: "inconclusive",
                    MIXED: "mixed", FAILED_RUNS: "mixed",
                    REFERENCE: "reference", NO_VERDICT: "missing"}


def _verdict_class(label: str) -> str:
    if label.startswith(NO_METRICS):
        return "missing"
    return _VERDICT_CLASSES.get(label, "inconclusive")


# --------------------------------------------------------------------------- description


def env_differences(source: Mapping[str, Any], target: Mapping[str, Any]) -> list[str]:
    """What differs between two env specs (study.json's ``spec.source``/``spec.target``), one
    markdown line each (names in backticks). Named variants and family defaults are resolved
    through the env catalog when it knows the ids; otherwise the specs are compared as written."""
    src_family, src_base, src_params = _resolve_env(source)
    tgt_family, tgt_base, tgt_params = _resolve_env(target)
    lines = []
    if src_base != tgt_base:
        lines.append(f"environment `{src_base}` → `{tgt_base}`")
    same_family = src_family is not None and src_family is tgt_family
    parameters = {p.name: p for p in tgt_family.parameters} if same_family else {}
    if same_family:  # fill in defaults so that "unset" reads as its value
        defaults = {name: json.dumps(p.default) if p.value_type is str else p.default
                    for name, p in parameters.items()}  # names are stored quoted
        src_params, tgt_params = {**defaults, **src_params}, {**defaults, **tgt_params}
    for name in sorted(set(src_params) | set(tgt_params)):
        before, after = src_params.get(name), tgt_params.get(name)
        if before != after:
            parameter = parameters.get(name)
            unit = f" {parameter.unit}" if parameter and parameter.unit not in ("", "-") else ""
            doc = f" ({parameter.doc})" if parameter else ""
            lines.append(f"`{name}`: {_value(before)} → {_value(after)}{unit}{doc}")
    for key in sorted((set(source) | set(target)) - {"id", "params"}):
        if source.get(key) != target.get(key):
            lines.append(f"`{key}`: {_value(source.get(key))} → {_value(target.get(key))}")
    return lines


def _resolve_env(env: Mapping[str, Any]) -> tuple[Any, str, dict[str, Any]]:
    """(family or None, base id, variant + explicit parameters) of an env spec."""
    explicit = dict(env.get("params") or {})
    try:
        from .. import envs as catalog

        found = catalog.family_of(env["id"])
    except (RLTransferError, ImportError):  # e.g. a family's optional package is missing
        found = None
    if found is None:
        return None, env["id"], explicit
    family, base_id, params = found
    return family, base_id, {**params, **explicit}


def _value(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _hparams_text(hparams: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={json.dumps(v) if isinstance(v, dict | list) else v}"
                     for k, v in hparams.items())


def _looks(result: StudySummary) -> list[dict[str, str]]:
    """--seeds auto: one row per comparison and look (seeds, p, z, the level its boundary
    crossed, or why the crossing did not count)."""
    rows = []
    for name, data in result.conditions.items():
        for look in data.sequential.looks if data.sequential is not None else ():
            level = look.level
            rows.append({"name": name, "n": str(look.n), "p": format_p(look.p_value),
                         "z": f"{look.z:+.2f}",
                         "level": ("not crossed" if level >= 1 else format_p(level)),
                         "note": look.disagreement and (
                             f"outcomes disagree: {look.disagreement}"
                             + ("" if look.counts else " (an interim look: not counted)"))
                         or ""})
    return rows


def _seeds_text(result: StudySummary, spec: Mapping[str, Any]) -> str:
    """What ran and what the seed count risks: a fixed count, or --seeds auto's looks."""
    design = result.sequential
    if design is None:
        return (f"{spec['seeds']} per condition (seeds {spec['seed']}–"
                f"{spec['seed'] + spec['seeds'] - 1}), fixed: a fixed count cannot hold the "
                "verdict's level when seeds fail to learn in one arm and not the other "
                "(benchmarks/README.md, calibration); --seeds auto adds seeds until the "
                "verdict is clear")
    runs = {c: r.total for c, r in result.runs.items()}
    most = max(runs.values(), default=0)
    looks = [n for n in design.looks if n <= most]
    return (f"--seeds auto (first {design.first}, step {design.step}, at most "
            f"{design.max} per condition): looks at {', '.join(map(str, looks)) or 'none'} "
            f"seeds; runs per condition: "
            + ", ".join(f"{c} {n}" for c, n in runs.items())
            + ("; the study has taken its last look" if design.done else
               "; more looks are planned (resume the study)"))


def _description(result: StudySummary, study: dict[str, Any]) -> list[tuple[str, str]]:
    """(term, text) pairs of what was compared; text marks code with backticks."""
    spec = study["spec"]
    differences = env_differences(spec["source"], spec["target"])
    conditions = ", ".join(f"{c} (reference)" if c == result.reference else c
                           for c in spec["conditions"])
    items = [
        ("source → target", f"`{result.source}` → `{result.target}`"),
        ("what differs", "; ".join(differences) or "nothing: the same environment"),
        ("algorithm", f"{result.algo}; conditions: {conditions}"),
        ("seeds", _seeds_text(result, spec)),
        ("budgets", budgets_text(result, spec)),
        _score_item(result),
        ("hyperparameters (target)", f"`{_hparams_text(study['target_agent']['hparams'])}`"),
    ]
    source_hparams = (study.get("source_agent") or {}).get("hparams")
    if source_hparams and source_hparams != study["target_agent"]["hparams"]:
        items.append(("hyperparameters (source)", f"`{_hparams_text(source_hparams)}`"))
    if study.get("source"):
        items.append(("source policy", _source_text(study["source"], result.source_steps)))
    if study.get("versions"):
        items.append(("versions", ", ".join(f"{k} {v}" for k, v in study["versions"].items())))
    if study.get("started"):
        items.append(("ran", f"{study['started']} – {study.get('ended') or 'unfinished'}"))
    return items


def _score_item(result: StudySummary) -> tuple[str, str]:
    """What the normalized score is: the return between random and the threshold, or with
    --score success the success rate between random's and 100%."""
    if result.score == "success":
        return ("score", f"success rate (--score success): the curves, the metrics and the "
                         f"verdict read the share of evaluation episodes that succeeded; "
                         f"normalized 0 = the random policy's success rate on the target "
                         f"{result.random_return:.4g}, 1 = 100% success")
    # the page's term, kept: "normalization" here is the normalized score's 0 and 1
    return ("normalization", f"threshold {result.threshold:g} ({result.threshold_from}), "
                             f"random policy's return on the target {result.random_return:.4g}; "
                             "scores are normalized: 0 = random, 1 = threshold")


def similarity_items(result: StudySummary) -> list[tuple[str, str]]:
    """(term, text) pairs of how similar source and target are (`summary.Similarity`),
    measured before the source was used on the target; none when the study has no record."""
    found = result.similarity
    if found is None:
        return []
    if found.skipped:
        return [("not measured", found.skipped)]
    items = []
    if found.zero_shot is not None:
        normalized = ("" if found.zero_shot_normalized is None
                      else f" (normalized {found.zero_shot_normalized:.2f})")
        items.append(("zero-shot", f"the source policy's mean return on the target "
                                   f"{found.zero_shot:.4g}{normalized}, deterministic, over "
                                   f"{found.zero_shot_episodes} episodes on the evaluation "
                                   "seeds of the first seed"))
    if found.classifier_accuracy is not None:
        items.append(("transition classifier", (
            f"held-out accuracy {found.classifier_accuracy:.2f} at telling the source "
            "policy's transitions on the source from those on the target (0.5: they cannot "
            f"be told apart, 1: always); {found.transitions} per side, its own stochastic "
            f"actions, {found.classifier_held_out} per side held out; rows: "
            f"{found.classifier_rows}")))
    if found.feature_distance is not None:
        items.append(("feature distance", f"{found.feature_distance:.3g}: the squared MMD "
                                          "between the source policy's features of source "
                                          "and of target observations (0: the same)"))
    items += [("note", note) for note in found.notes]
    return items


def budgets_text(result: StudySummary, spec: Mapping[str, Any]) -> str:
    """The steps the runs really trained and the evaluation grid really used (from their
    evaluations.csv), with what was asked where it differs."""
    steps = int(result.budget)
    asked = int(spec["timesteps"])
    text = f"target {steps:,} env steps per run"
    if steps != asked:
        text += f" (--timesteps {asked:,}, rounded up to whole rollouts)"
    if spec.get("source_model"):  # --source-model: the source budget was never spent
        text += (f"; source: external checkpoint `{spec['source_model']}` (not trained by "
                 "rltransfer)")
    else:
        trained = result.source_steps
        text += f"; source {trained or spec['source_timesteps']:,}"
        if trained and trained != spec["source_timesteps"]:
            text += f" (--source-timesteps {spec['source_timesteps']:,}, rounded up)"
    grid = result.evaluations
    episodes = spec.get("eval_episodes", "?")
    if grid.per_run:
        low, high = grid.per_run
        times = f"{low}" if low == high else f"{low} to {high}"
        where = describe_grid(list(grid.grid)) if grid.grid else _spacing(grid)
        text += f"; each run evaluated {times} times ({episodes} episodes each), {where}"
        nominal = spec.get("eval_freq")
        if nominal and _spacing(grid) != f"every {nominal:,} steps":
            text += f" (--eval-freq {nominal:,}: evaluations fall at the start of a rollout)"
    elif spec.get("eval_freq"):
        text += f"; evaluation every {spec['eval_freq']:,} steps ({episodes} episodes)"
    if spec.get("n_envs"):
        text += f"; {spec['n_envs']} parallel envs"
    for condition, record in result.runs.items():
        if record.outside_budget:
            spans = ", ".join(f"{_span(low, high)} {env}" for env, low, high
                              in record.outside_budget)
            text += (f"; {condition} also took {spans} env steps per run, outside the target "
                     "budget")
    return text


def _span(low: int, high: int) -> str:
    return f"{low:,}" if low == high else f"{low:,} to {high:,}"


def _spacing(grid: EvaluationGrid) -> str:
    if not grid.spacing:
        return "at 0 only"
    low, high = grid.spacing
    return f"every {low:,} steps" if low == high else f"{low:,} to {high:,} steps apart"


def _source_text(source: Mapping[str, Any], steps: int | None = None) -> str:
    """Where the source policy came from: an external checkpoint, trained in this study, or
    reused from the cache; `steps`: the env steps it was trained for."""
    kind = str(source.get("kind", "?"))
    trained = f" for {steps:,} steps" if steps else ""
    if kind == "external":  # --source-model (preflight.check_external's record)
        text = f"external checkpoint `{source.get('path', '?')}`"
        if source.get("sha256"):
            text += f" (sha256 {str(source['sha256'])[:12]}…)"
        if source.get("algo_in_checkpoint"):
            text += f", a {source['algo_in_checkpoint']} checkpoint not trained by rltransfer"
    elif kind == "cache" and source.get("reused"):
        text = (f"reused from the source cache (`{source.get('key', '?')}`), trained{trained} "
                f"by an earlier study with the same source run")
    elif kind == "cache":
        text = (f"trained in this study{trained} (then cached as `{source.get('key', '?')}` "
                f"for other studies)")
    else:
        text = kind
    if source.get("final_return") is not None:
        text += f", final return on the source {source['final_return']:.4g}"
    return text
