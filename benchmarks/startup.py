"""The fixed cost of a study: the whole `python -m rltransfer run` process against a plain
Stable-Baselines3 script, and what that fixed part leaves of `--workers 2`'s speed-up.

Two measurements, in one run of this script (both on 1 torch thread per run, RL-Zoo's PPO
CartPole-v1 preset, target CartPole-v1:length=1.0, 20 evaluations of 10 episodes per run):

1. **One run.** A study with one run to train (`--conditions scratch --seeds 1`, 50,000
   steps, the default `--workers`): CartPole registers a reward_threshold, so a scratch-only
   study needs no source policy (the script checks that none was trained). It is timed as a
   whole process against one plain SB3 script of the same run: the same preset and budget, 1
   torch thread, an EvalCallback with the same schedule (every timesteps/20 env steps).
2. **Workers.** A 2-condition x 4-seed study (scratch, finetune), 20,000 steps per run, the
   source trained once beforehand and copied into each study's cache: `--workers 1` against
   `--workers 2`, each in a fresh folder (so no scratch run comes from the cache).

Every timing is a whole `python ...` process (start-up, imports, checks, training, report).
Each configuration is timed --repeats times, interleaved, and the best is reported (the
machine's other load only ever adds time). Before each timing the script waits for the
machine to be quiet (--quiet-wait); the load average is printed after each repeat.

    python benchmarks/startup.py                     # both goals, best of 3
    python benchmarks/startup.py --repeats 5 --json startup.json

Not a test: it takes several minutes, and its numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scaling import PLAIN_SCRIPT, SOURCE, TARGET  # noqa: E402  (the same plain baseline)

# scaling.py's plain script, on 1 torch thread as every rltransfer run is.
PLAIN_ONE_THREAD = "import torch\ntorch.set_num_threads(1)\n" + PLAIN_SCRIPT


def _busy() -> tuple[float, float]:
    """(busy, total) CPU time of the whole machine so far, from /proc/stat (Linux)."""
    try:
        fields = [float(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    except OSError:  # pragma: no cover - not Linux: no check
        return 0.0, 0.0
    idle = fields[3] + fields[4]  # idle, iowait
    return sum(fields) - idle, sum(fields)


def _wait_quiet(limit: float) -> float:
    """Wait (up to `limit` seconds) until the machine is at most 10% busy for a second;
    return how busy that last second was (other processes' load only adds time)."""
    deadline = time.monotonic() + limit
    while True:
        busy0, total0 = _busy()
        time.sleep(1.0)
        busy1, total1 = _busy()
        share = (busy1 - busy0) / max(total1 - total0, 1e-9)
        if share <= 0.10 or time.monotonic() > deadline:
            return share


def _timed(command: list[str], cwd: Path, quiet_wait: float) -> float:
    if quiet_wait > 0:
        share = _wait_quiet(quiet_wait)
        if share > 0.10:
            print(f"  (machine still {share:.0%} busy after {quiet_wait:.0f} s; timing anyway)",
                  flush=True)
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def _study(out: Path, conditions: str, seeds: int, timesteps: int, source_timesteps: int,
           extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "rltransfer", "run", SOURCE, TARGET, "--conditions",
            conditions, "--seeds", str(seeds), "--timesteps", str(timesteps),
            "--source-timesteps", str(source_timesteps), "--out", str(out), "--name", "study",
            *extra]


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def one_run(root: Path, args: argparse.Namespace) -> dict[str, list[float]]:
    """Goal (a): the whole process of a one-run study vs one plain SB3 script."""
    times: dict[str, list[float]] = {"plain SB3 script": [], "rltransfer run": []}
    for repeat in range(args.repeats):
        folder = root / f"one-{repeat}"
        folder.mkdir()
        times["plain SB3 script"].append(_timed(
            [sys.executable, "-c", PLAIN_ONE_THREAD, "scratch", "0", str(args.timesteps), ""],
            folder, args.quiet_wait))
        out = folder / "runs"
        times["rltransfer run"].append(_timed(
            _study(out, "scratch", 1, args.timesteps, args.timesteps, []), folder,
            args.quiet_wait))
        study = out / "study"
        if (study / "source" / "model.zip").exists() or list((out / ".cache").glob("sources/*")):
            raise SystemExit("the one-run study trained a source policy: it is not one run")
        print(f"  one run, repeat {repeat + 1}: plain {times['plain SB3 script'][-1]:.1f} s, "
              f"rltransfer {times['rltransfer run'][-1]:.1f} s  (load {_load()})", flush=True)
    return times


def workers(root: Path, args: argparse.Namespace) -> dict[str, list[float]]:
    """Goal (b): a 2 x 4 study with a cached source, --workers 1 vs --workers 2."""
    prime = root / "prime"
    print(f"  priming the source cache ({args.source_timesteps:,} steps)", flush=True)
    subprocess.run(_study(prime, "scratch,finetune", 1, 256, args.source_timesteps,
                          ["--workers", "1"]), check=True, stdout=subprocess.DEVNULL)
    cache = prime / ".cache" / "sources"
    configs = {"--workers 1": ["--workers", "1"],
               f"--workers {args.workers}": ["--workers", str(args.workers)]}
    times: dict[str, list[float]] = {label: [] for label in configs}
    for repeat in range(args.repeats):
        for label, extra in configs.items():
            out = root / f"study-{repeat}-{label.split()[-1]}"
            shutil.copytree(cache, out / ".cache" / "sources")
            times[label].append(_timed(_study(out, "scratch,finetune", args.seeds,
                                              args.study_timesteps, args.source_timesteps,
                                              extra), root, args.quiet_wait))
            if (out / "study" / "source" / "source.json").is_file() and not \
                    json.loads((out / "study" / "source" / "source.json").read_text())["reused"]:
                raise SystemExit("the study trained its source: the cache was not used")
        print(f"  workers, repeat {repeat + 1}: " + ", ".join(
            f"{label} {t[-1]:.1f} s" for label, t in times.items()) + f"  (load {_load()})",
            flush=True)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="timings per configuration")
    parser.add_argument("--timesteps", type=int, default=50_000,
                        help="steps of the one-run study (goal a)")
    parser.add_argument("--study-timesteps", type=int, default=20_000,
                        help="steps per run of the 2 x SEEDS study (goal b)")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--source-timesteps", type=int, default=50_000)
    parser.add_argument("--workers", type=int, default=2, help="the parallel configuration")
    parser.add_argument("--only", choices=("one-run", "workers"), help="measure one goal")
    parser.add_argument("--quiet-wait", type=float, default=120.0, metavar="S",
                        help="before each timing, wait up to S seconds for the machine to be "
                             "at most 10%% busy (0: never wait; default: %(default)g)")
    parser.add_argument("--json", metavar="FILE", help="also write every timing here")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="rltransfer-startup-"))
    results: dict[str, dict[str, list[float]]] = {}
    print(f"{os.cpu_count()} cores, load average {_load()}; best of {args.repeats}", flush=True)
    try:
        if args.only in (None, "one-run"):
            results["one run"] = one_run(root, args)
        if args.only in (None, "workers"):
            results["workers"] = workers(root, args)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"\nload average after: {_load()}")
    if "one run" in results:
        plain, ours = (min(results["one run"][k]) for k in ("plain SB3 script",
                                                            "rltransfer run"))
        print(f"(a) one {args.timesteps:,}-step run, whole process, best of {args.repeats}: "
              f"plain SB3 {plain:.1f} s, rltransfer {ours:.1f} s: {ours / plain:.2f}x plain")
    if "workers" in results:
        times = results["workers"]
        one, many = min(times["--workers 1"]), min(times[f"--workers {args.workers}"])
        print(f"(b) 2 conditions x {args.seeds} seeds x {args.study_timesteps:,} steps, best of "
              f"{args.repeats}: --workers 1 {one:.1f} s, --workers {args.workers} {many:.1f} s:"
              f" {one / many:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
