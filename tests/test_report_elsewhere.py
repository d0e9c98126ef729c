"""The study's report computed in a process forked from the pre-warmed worker server
(`execution.summarize_elsewhere`), so the study process never imports SciPy or matplotlib.

No timings (benchmarks/startup.py measures them): these tests check that the report made
elsewhere is the one made here, and that a real `python -m rltransfer run` process leaves
those imports to the server."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from rltransfer.cli import main
from rltransfer.report import build as report
from rltransfer.study import execution

PAIR = ["CartPole-v1", "CartPole-v1:length=1.0"]
TINY = ["--hparams", "n_steps=64", "batch_size=64", "n_epochs=2", "--n-envs", "2",
        "--eval-episodes", "2", "--timesteps", "256", "--eval-freq", "128"]
FILES = ("summary.json", "summary.csv", "report.md", "report.html", "curves.png",
         "curves.svg", "profiles.png", "metrics.png")


def test_the_report_made_in_the_server_equals_the_one_made_here(tmp_path, monkeypatch):
    assert main(["run", *PAIR, "--conditions", "scratch", "--seeds", "2", "--workers", "1",
                 "--out", str(tmp_path), "--name", "s", *TINY]) == 0
    study = tmp_path / "s"
    here = json.loads((study / "summary.json").read_text())
    for name in FILES:
        (study / name).unlink()

    def not_here(study_dir):
        raise AssertionError("the report was computed in the study's process")

    monkeypatch.setattr(report, "summarize_study", not_here)  # only this process's copy
    execution.start_worker_server()
    assert execution._SERVER["started"]
    elsewhere = execution.summarize_elsewhere(study)
    assert elsewhere.to_dict() == here
    assert json.loads((study / "summary.json").read_text()) == here
    assert all((study / name).is_file() for name in FILES)


def test_without_a_server_the_report_is_made_here(tmp_path, monkeypatch):
    monkeypatch.setitem(execution._SERVER, "started", False)
    made = []
    monkeypatch.setattr(report, "summarize_study", lambda study_dir: made.append(study_dir)
                        or {"made": "here"})
    assert execution.summarize_elsewhere(tmp_path) == {"made": "here"}
    assert made == [tmp_path]


def test_a_study_process_never_imports_scipy_or_matplotlib(tmp_path):
    script = textwrap.dedent(f"""
        import atexit, runpy, sys
        atexit.register(lambda: print("imported:", "scipy" in sys.modules,
                                      "matplotlib" in sys.modules))
        sys.argv = ["rltransfer", "run", *{PAIR!r}, "--conditions", "scratch", "--seeds", "1",
                    "--out", {str(tmp_path)!r}, "--name", "p", *{TINY!r}]
        runpy.run_module("rltransfer", run_name="__main__")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr
    assert "imported: False False" in done.stdout
    assert (tmp_path / "p" / "report.html").is_file()
    assert json.loads((tmp_path / "p" / "summary.json").read_text())["runs"]["scratch"][
        "finished"] == 1
