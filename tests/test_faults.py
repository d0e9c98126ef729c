"""Faults under a study (issue 20, point 7): a disk that fills up or turns read-only in the
middle of a study stops it by itself, in one line that names the cause and the resume command
(exit status 1, no traceback, no hang); finished runs are kept as they were, and `resume`
finishes the study once the disk is fixed.

The disk's failure is simulated: every atomic write and every TensorBoard record write under
the study folder raises OSError (ENOSPC or EROFS) from a chosen moment on, in this process
(`--workers 1`) or, through a sitecustomize module on PYTHONPATH, in a study's own process, its
fork server and its workers (`--workers 2`). Tests run as root, for whom chmod stops nothing.
"""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from tensorboard.summary.writer import record_writer

from rltransfer.cli import main
from rltransfer.errors import StorageError
from rltransfer.io_utils import read_json
from rltransfer.study import execution
from rltransfer.training import run as training

PAIR = ["CartPole-v1", "CartPole-v1:length=1.0"]
TINY = ["--hparams", "n_steps=64", "batch_size=64", "n_epochs=1", "--n-envs", "2",
        "--eval-episodes", "2", "--conditions", "scratch,finetune", "--seeds", "2"]


def _states(study: Path) -> dict[str, str]:
    return {str(p.parent.relative_to(study)): read_json(p)["state"]
            for p in sorted(study.glob("*/seed_*/status.json"))}


def _digests(study: Path, runs: list[str]) -> dict[str, str]:
    return {str(p.relative_to(study)): hashlib.sha256(p.read_bytes()).hexdigest()
            for run in runs for p in sorted((study / run).iterdir()) if p.is_file()}


class Disk:
    """Writes under `root` fail with `code` once `full` is set (by `trigger(path, data)`,
    called with each atomic write before it happens)."""

    def __init__(self, root: Path, code: int, trigger) -> None:
        self.root, self.code, self.trigger = str(root), code, trigger
        self.full = False

    def error(self, path: object) -> OSError:
        return OSError(self.code, os.strerror(self.code), str(path))

    def patch(self, monkeypatch) -> None:
        from rltransfer import io_utils

        real_write = io_utils.atomic_write_bytes
        real_record = record_writer.RecordWriter.write

        def atomic_write_bytes(path, data):
            if str(path).startswith(self.root):
                if self.full:
                    raise self.error(path)
                self.full = self.trigger(Path(path), data)
            real_write(path, data)

        def record(writer, data):
            if self.full:
                raise OSError(self.code, os.strerror(self.code))  # a write names no file
            real_record(writer, data)

        for module in list(sys.modules.values()):  # io_utils, and those that import it
            if getattr(module, "__name__", "").startswith("rltransfer") and \
                    getattr(module, "atomic_write_bytes", None) is real_write:
                monkeypatch.setattr(module, "atomic_write_bytes", atomic_write_bytes)
        monkeypatch.setattr(record_writer.RecordWriter, "write", record)


def _after_first_evaluations(path: Path, data: bytes) -> bool:
    """scratch seed 1 has written its evaluations at steps 0 and 128: the disk is full."""
    return (path.parts[-3:] == ("scratch", "seed_1", "evaluations.csv")
            and data.count(b"\n") >= 3)


def test_a_full_disk_mid_study_stops_it_in_one_line_and_resume_finishes(
        tmp_path, capsys, monkeypatch):
    out = tmp_path / "runs"
    study = out / "full"
    args = ["run", *PAIR, "--out", str(out), "--name", "full", "--workers", "1",
            "--timesteps", "512", "--source-timesteps", "256", "--eval-freq", "128", *TINY]
    with monkeypatch.context() as patch:
        disk = Disk(study, errno.ENOSPC, _after_first_evaluations)
        disk.patch(patch)
        assert main(args) == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert lines == [
        f"rltransfer: error: the study stopped: its disk failed (No space left on device: "
        f"{study / 'scratch' / 'seed_1' / 'checkpoint.pt'}); free some space on its disk, "
        f"then: python -m rltransfer resume {study}"]
    assert "Traceback" not in captured.out + captured.err
    assert "[failed] scratch seed 1: OSError: [Errno 28] No space left on device" in captured.out
    states = _states(study)
    assert states["scratch/seed_0"] == "done"
    assert states["scratch/seed_1"] == "running"  # its status could not be written
    assert states["finetune/seed_0"] == states["finetune/seed_1"] == "pending"  # not started
    kept = _digests(study, ["source", "scratch/seed_0"])

    assert main(["resume", str(study), "--workers", "1"]) == 0  # the disk has space again
    printed = capsys.readouterr().out
    assert "scratch seed 1: was running; runs again" in printed
    assert set(_states(study).values()) == {"done"}
    assert _digests(study, ["source", "scratch/seed_0"]) == kept  # finished runs as they were
    assert not (study / ".lock").exists()

    # The disk fills up again: the report's files cannot be written. One line, exit 1, in
    # the study's report stage (which says to run report) and in `report` itself.
    with monkeypatch.context() as patch:
        disk = Disk(study, errno.ENOSPC, lambda path, data: True)
        disk.patch(patch)
        disk.full = True
        patch.setitem(execution._SERVER, "started", False)  # summarized in this process
        with pytest.raises(StorageError) as stopped:
            execution.summarize_elsewhere(study)
        assert str(stopped.value) == (
            f"the study's runs are finished, but its report could not be written (No space "
            f"left on device: {study / 'summary.json'}); free some space on its disk, then: "
            f"python -m rltransfer report {study}")
        assert main(["report", str(study)]) == 1
    captured = capsys.readouterr()
    assert captured.err == (f"rltransfer: error: cannot write (No space left on device: "
                            f"{study / 'summary.json'}); free some space on its disk, then run "
                            f"the command again\n")
    assert "Traceback" not in captured.out


def test_a_dead_tensorboard_writer_fails_the_run_in_one_line(tmp_path, tiny_agent, capsys,
                                                             monkeypatch):
    """The writer thread dies on its first write after the disk filled up; the run fails
    with that error (no hang, and no thread traceback on stderr), and says so."""
    from rltransfer.specs import EnvSpec, RunSpec

    run = RunSpec(EnvSpec.parse("CartPole-v1"), tiny_agent, "scratch", seed=0, timesteps=512,
                  eval_freq=128, eval_episodes=2)
    monkeypatch.setattr(record_writer.RecordWriter, "write", _failing_after(3))
    with pytest.raises(OSError) as failed:
        training.train_run(run, tmp_path / "run")
    assert failed.value.errno == errno.ENOSPC
    for thread in threading.enumerate():
        if type(thread).__name__ == "_AsyncWriterThread":
            thread.join(0.2)  # a dying writer thread has printed by now, if it prints
    assert capsys.readouterr().err == ""
    status = read_json(tmp_path / "run" / "status.json")
    assert status["state"] == "failed"
    assert status["error"] == "OSError: [Errno 28] No space left on device"


def _failing_after(records: int):
    """RecordWriter.write on a disk that fills up after `records` records."""
    real = record_writer.RecordWriter.write
    count = {"n": 0}

    def write(writer, data):
        count["n"] += 1
        if count["n"] > records:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(writer, data)
    return write


# A read-only disk in every process of a study: its own, the fork server's, the workers'.
# From the moment $FAULT_TRIGGER exists, writes under $FAULT_ROOT fail with EROFS.
SITECUSTOMIZE = '''
import errno, os

def _install():
    root, trigger = os.environ.get("FAULT_ROOT"), os.environ.get("FAULT_TRIGGER")
    if not root or not trigger:
        return
    from rltransfer import io_utils
    from tensorboard.summary.writer import record_writer

    def failed(path=None):
        return OSError(errno.EROFS, os.strerror(errno.EROFS), *([str(path)] if path else []))

    real_write, real_record = io_utils.atomic_write_bytes, record_writer.RecordWriter.write

    def atomic_write_bytes(path, data):
        if str(path).startswith(root) and os.path.exists(trigger):
            raise failed(path)
        real_write(path, data)

    def record(writer, data):
        if os.path.exists(trigger):
            raise failed()
        real_record(writer, data)

    io_utils.atomic_write_bytes = atomic_write_bytes  # before training imports it
    record_writer.RecordWriter.write = record

_install()
'''


def test_a_disk_turning_read_only_under_workers_stops_the_study_and_resume_finishes(
        tmp_path, capsys):
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(SITECUSTOMIZE)
    out = tmp_path / "runs"
    study = out / "ro"
    trigger = tmp_path / "read-only-now"
    env = {**os.environ, "FAULT_ROOT": str(study), "FAULT_TRIGGER": str(trigger),
           "PYTHONPATH": os.pathsep.join([str(hooks), *filter(None, [
               os.environ.get("PYTHONPATH")])])}
    command = [sys.executable, "-m", "rltransfer", "run", *PAIR, "--out", str(out), "--name",
               "ro", "--workers", "2", "--timesteps", "1024", "--source-timesteps", "256",
               "--eval-freq", "128", *TINY]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:  # read-only once two runs train, mid-way
            states = _states(study) if study.is_dir() else {}
            mid_way = [r for r, s in states.items()
                       if s == "running" and (study / r / "checkpoint.pt").is_file()]
            if len(mid_way) == 2:
                break
            assert process.poll() is None, process.communicate()
            time.sleep(0.05)
        else:
            pytest.fail(f"no moment to fail the disk: {states}")
        kept = _digests(study, ["source"])
        trigger.touch()
        stdout, stderr = process.communicate(timeout=120)  # never a hang
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 1, stderr
    assert "Traceback" not in stdout + stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("rltransfer: error: the study stopped: its disk failed "
                               "(Read-only file system")
    assert lines[0].endswith(f"); make its disk writable again, then: python -m rltransfer "
                             f"resume {study}")
    assert "OSError: [Errno 30] Read-only file system" in stdout
    # each run in flight failed with the disk, or was stopped by the study
    assert stdout.count("[failed] ") + stdout.count("[interrupted] ") == 2, stdout

    trigger.unlink()  # writable again
    assert main(["resume", str(study), "--workers", "2"]) == 0
    assert "runs again" in capsys.readouterr().out
    assert set(_states(study).values()) == {"done"}
    assert _digests(study, ["source"]) == kept
