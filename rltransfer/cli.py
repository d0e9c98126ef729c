"""Command line: ``python -m rltransfer run|report|envs``.

The only module that reads sys.argv. User mistakes print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import gc
import shlex
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from rich.console import Console
from rich.table import Table

from .errors import ConfigError, MissingDependencyError, RLTransferError, did_you_mean
from .specs import CONDITIONS
from .strategies import registry
from .study.execution import (
    BACKENDS,
    Execution,
    available_cores,
    start_worker_server,
    summarize_elsewhere,
    will_use_workers,
)
from .study.similarity import DEFAULT_TRANSITIONS
from .study.spec_checks import SCORES
from .study.study_spec import PARTS, StudySpec, flat_values
from .training import algo_registry

if TYPE_CHECKING:
    from .report.summary import StudySummary

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# For --help, from the algorithm registry's torch-free table: `report`, `compare` and `envs`
# import neither torch nor SB3.
ALGORITHM_NAMES = algo_registry.NAMES


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (and exit status 2), not a usage dump."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        raise SystemExit(2)


RUN_EPILOG = """\
examples:
  python -m rltransfer run CartPole-v1 CartPole-v1:length=1.0
  python -m rltransfer run CartPole-v1 rltransfer/CartPole-LongPole-v0 \\
      --conditions scratch,finetune,freeze-features --seeds 10 --timesteps 50000
  python -m rltransfer run Pendulum-v1 Pendulum-v1:m=1.5 --algo sac
  python -m rltransfer run --config study.toml --seeds 3     # the CLI overrides the file
  python -m rltransfer run CartPole-v1 CartPole-v1:length=1.0 --pixels --augment random-shift
  python -m rltransfer run ALE/Pong-v5 ALE/Pong-v5:mode=1 \
      --conditions scratch,finetune,pretrained-encoder --encoder resnet18

Then: python -m rltransfer tensorboard runs/<study>   (curves per run and per condition)
"""


def _add_study_options(run: argparse.ArgumentParser) -> None:
    """The options of a study, shared by `run` and `matrix`."""
    S = argparse.SUPPRESS  # unset options fall back to --config, then to the defaults
    run.add_argument("--algo", default=S, metavar="NAME",
                     help=f"algorithm: {', '.join(ALGORITHM_NAMES)}; tqc and the ones after "
                          "it come from sb3-contrib (pip install 'rltransfer[contrib]'); "
                          "README, 'Algorithms' (default: ppo)")
    run.add_argument("--conditions", default=S, metavar="LIST",
                     help="comma-separated conditions to compare: "
                          f"{', '.join(CONDITIONS)}, each spelled name or "
                          "name:key=value,... e.g. finetune:lr_scale=0.1, "
                          "freeze-features:layers=1, kickstart:steps=5000,init=finetune, "
                          "replay:n=5000 (off-policy: the buffer pre-filled by the source "
                          "policy on the target; replay:dataset=ID from a local Minari "
                          "dataset), finetune:eps=0.1 (DQN's starting epsilon), "
                          "finetune:norm=freeze (the source's VecNormalize statistics: "
                          "freeze, update or reset) "
                          "(options: README, 'Transfer conditions') "
                          "(default: scratch,finetune)")
    run.add_argument("--seeds", default=S, metavar="N|auto",
                     help="number of seeds per condition (default: 5), or auto: a "
                          "group-sequential study that starts with 5 seeds and adds 5 at a "
                          "time (scratch's too) until every verdict is decided, up to 20; "
                          "auto:first=5,step=5,max=20 sets the batches (README, 'Metrics "
                          "and the verdict')")
    run.add_argument("--seed", type=int, default=S, metavar="K",
                     help="first seed; seeds are K..K+N-1, the source uses K (default: 0)")
    run.add_argument("--timesteps", type=int, default=S, metavar="N",
                     help="target training budget per run, in env steps, rounded up to whole "
                          "rollouts (n_steps x n_envs; less than one is an error) (default: "
                          "the preset's n_timesteps for the target)")
    run.add_argument("--source-timesteps", type=int, default=S, metavar="N",
                     help="source training budget, rounded up the same way (default: the "
                          "preset's n_timesteps)")
    run.add_argument("--eval-freq", type=int, default=S, metavar="N",
                     help="evaluate every N target env steps, at the first rollout start "
                          "past each multiple (default: timesteps/20)")
    run.add_argument("--eval-episodes", type=int, default=S, metavar="N",
                     help="episodes per evaluation, deterministic policy (default: 10)")
    run.add_argument("--threshold", type=float, default=S, metavar="R",
                     help="return that counts as solved, normalized score 1 (default: Atari: "
                          "the published human score, with the published random score as 0; "
                          "else the target's reward_threshold; else, with a warning, the "
                          "source policy's mean over its last 3 evaluations). Refused unless "
                          "it is at least 3 evaluation standard errors above the random "
                          "policy's return")
    run.add_argument("--similarity", type=int, default=S, metavar="N",
                     help="how similar source and target are, measured once the source "
                          "policy is ready, before it is used on the target: its zero-shot "
                          "return on the target (deterministic, --eval-episodes), the "
                          "held-out accuracy of a classifier that tells its (s, a, s') "
                          "transitions on the source from those on the target (N per side, "
                          "its own stochastic actions; 0.5: indistinguishable), and the "
                          "distance (MMD) between its features of source and target "
                          "observations; in similarity.json, summary.json, the report and "
                          "the matrix, which ranks them against the area difference. N "
                          "transitions per side; 0 turns it off (default: "
                          f"{DEFAULT_TRANSITIONS})")
    run.add_argument("--score", choices=SCORES, default=S,
                     help="what the study compares: 'return' (the evaluation return) or "
                          "'success' (the share of evaluation episodes that succeeded, for "
                          "envs whose step infos report is_success, read at the episode's "
                          "last step, or success, any step): curves, thresholds, metrics, "
                          "verdict and report then read success rates, normalized 0 = the "
                          "random policy's success rate on the target, 1 = 100%% success; "
                          "refused for a target that reports no success, or where the random "
                          "policy already succeeds almost always. Success rates are recorded "
                          "either way where the env reports them (default: return)")
    run.add_argument("--alpha", type=float, default=S, metavar="A",
                     help="level of the verdict, fixed before the study: a condition is "
                          "positive/negative transfer when the Holm-corrected Welch t test "
                          "(skew-checked) of its area difference against scratch has p <= A; "
                          "intervals are 1-A (default: 0.05)")
    run.add_argument("--n-envs", type=int, default=S, metavar="N",
                     help="parallel envs per run (default: the preset's n_envs)")
    run.add_argument("--hparams", nargs="+", action="extend", default=S, metavar="KEY=VALUE",
                     help="override preset hyperparameters for source and target, e.g. "
                          "learning_rate=3e-4 'policy_kwargs={net_arch=[64,64]}' "
                          "normalize=false (VecNormalize, on in RL-Zoo's presets that have it)")
    run.add_argument("--device", default=S, metavar="DEV",
                     help="auto (CPU for MLP policies, CUDA for CNN ones when present), cpu, "
                          "cuda or cuda:N (default: auto)")
    run.add_argument("--source-model", default=S, metavar="PATH.zip|hf://ORG/REPO",
                     help="use this Stable-Baselines3 checkpoint as the source instead of "
                          "training one: a .zip, or an RL-Zoo agent on the Hugging Face Hub "
                          "(hf://sb3/sac-Pendulum-v1, read from huggingface_hub's cache; "
                          "downloaded unless HF_HUB_OFFLINE=1). The study adopts its network "
                          "(net_arch, activation_fn, use_sde, log_std_init...) for source and "
                          "targets; only its weights and JSON metadata are read (no pickled "
                          "code runs)")
    run.add_argument("--retrain-source", action="store_true", default=S,
                     help="train the source again even if a cached policy exists")
    run.add_argument("--name", default=S, metavar="NAME",
                     help="study folder name (default: SOURCE--TARGET--ALGO-<time>)")
    run.add_argument("--out", default=S, metavar="DIR",
                     help="folder for studies and the source cache (default: runs)")
    pixels = run.add_argument_group(
        "pixel observations and image encoders",
        "Native pixel envs (CarRacing, ALE, MiniGrid, rltransfer's own) observe images without "
        "--pixels; every image policy uses SB3's NatureCNN unless the condition is "
        "pretrained-encoder.")
    pixels.add_argument("--pixels", action="store_true", default=S,
                        help="observe rendered rgb_array frames instead of the env's state "
                             "(works on any env that renders, e.g. CartPole-v1:length=1.0)")
    pixels.add_argument("--image-size", type=int, default=S, metavar="N",
                        help="resize rendered frames to N x N (default: 84)")
    pixels.add_argument("--grayscale", action="store_true", default=S,
                        help="convert rendered frames to grayscale")
    pixels.add_argument("--frame-stack", type=int, default=S, metavar="N",
                        help="stack the last N observations (default: the preset's, else 4 "
                             "for image observations, 1 otherwise)")
    pixels.add_argument("--encoder", default=S, metavar="NAME",
                        help="image encoder of the pretrained-encoder condition: nature-cnn or "
                             "any torchvision classification model, e.g. resnet18, resnet50, "
                             "mobilenet_v3_small, efficientnet_b0, vgg16 (default: resnet18)")
    pixels.add_argument("--encoder-weights", default=S, metavar="imagenet|none|PATH",
                        help="imagenet (torchvision's weights; must be in torch hub's cache "
                             "offline), none (random init), a state-dict file, or an SB3 "
                             "model.zip whose CNN to reuse (both read with weights_only=True; "
                             "default: imagenet)")
    frozen = pixels.add_mutually_exclusive_group()
    frozen.add_argument("--freeze-encoder", dest="freeze_encoder", action="store_true",
                        default=S, help="keep the pretrained encoder fixed (the default): no "
                                        "gradient, BatchNorm statistics frozen, and its "
                                        "features computed once per observation (not with "
                                        "--augment, which changes the images every update)")
    frozen.add_argument("--finetune-encoder", dest="freeze_encoder", action="store_false",
                        default=S, help="train the pretrained encoder too, at a lower rate")
    pixels.add_argument("--encoder-lr-scale", type=float, default=S, metavar="X",
                        help="learning-rate factor of a fine-tuned encoder (default: 0.1)")
    pixels.add_argument("--augment", default=S, metavar="random-shift",
                        help="DrQ's pad-4 random shift of image observations during updates, "
                             "for every condition, scratch included; a frozen pretrained "
                             "encoder then runs on every update instead of once per "
                             "observation (default: none)")
    _add_execution_options(run)
    run.add_argument("--config", metavar="FILE.toml",
                     help="read any of these options from a TOML file (keys as the option "
                          "names, e.g. source, target, timesteps, source_timesteps, hparams = "
                          "{learning_rate = 3e-4}), or grouped in the spec's tables [env], "
                          "[agent], [transfer], [protocol], [output]; options given here "
                          "override it")


def _add_execution_options(parser: argparse.ArgumentParser) -> None:
    """How runs execute; none of it changes results, so it may differ on --resume."""
    group = parser.add_argument_group(
        "execution", "Runs (condition x seed) are independent: they run in parallel. The "
                     "source run goes first; runs that start from it wait for it.")
    group.add_argument("--workers", type=int, metavar="N",
                       help="worker processes on this machine (default: one per core, here "
                            f"{available_cores()}); 1 runs everything in this process")
    group.add_argument("--threads", type=int, metavar="N",
                       help="torch threads per run (default: 1, so workers never oversubscribe "
                            "the cores and results do not depend on --workers; with --backend "
                            "ray: --cpus-per-run)")
    group.add_argument("--backend", choices=BACKENDS, default="local",
                       help="local: processes on this machine; ray: Ray tasks on a cluster "
                            "(pip install 'rltransfer[ray]'; --out must be a folder every node "
                            "shares) (default: local)")
    group.add_argument("--address", metavar="auto|HOST:PORT",
                       help="Ray cluster to join: auto finds one started with 'ray start "
                            "--head' (default: a local Ray instance)")
    group.add_argument("--cpus-per-run", type=float, metavar="N",
                       help="Ray CPUs per run (default: 1)")
    group.add_argument("--gpus-per-run", type=float, metavar="X",
                       help="Ray GPUs per run; fractions share a GPU, e.g. 0.25 puts 4 runs on "
                            "one (default: 0)")


def _execution(args: argparse.Namespace) -> Execution:
    return Execution(workers=args.workers, backend=args.backend, address=args.address,
                     cpus_per_run=args.cpus_per_run, gpus_per_run=args.gpus_per_run,
                     threads=args.threads)


_EXECUTION_KEYS = ("workers", "threads", "backend", "address", "cpus_per_run", "gpus_per_run",
                   "resume")


def _build_parser(parser_class: type[argparse.ArgumentParser] = _Parser
                  ) -> argparse.ArgumentParser:
    """The command line's parser; `rltransfer.api` builds it with a `parser_class` whose
    error() raises, so that `rltransfer.run` takes exactly the options of `run`."""
    parser = parser_class(prog="rltransfer", description=(
        "Policy transfer studies: train (or load) a policy on a SOURCE environment, use it to "
        "initialize training on a related TARGET, and compare against training from scratch "
        "with the same budget, seeds and evaluation protocol."))
    sub = parser.add_subparsers(dest="command", required=True, parser_class=parser_class)

    run = sub.add_parser(
        "run", help="run a transfer study", epilog=RUN_EPILOG + "\n" + registry.help_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run a transfer study from SOURCE to TARGET. Environments are Gymnasium "
                    "ids, optionally with family parameters: CartPole-v1:length=1.0,force_mag=5 "
                    "('python -m rltransfer envs' lists them). A parameter may be a distribution "
                    "redrawn at every episode reset (domain randomization): "
                    "CartPole-v1:length=uniform(0.25,1.0), or loguniform(a,b), "
                    "choice(x,y,...), normal(mu,sigma) (clipped to the valid range).")
    S = argparse.SUPPRESS  # unset options fall back to --config, then to the defaults
    run.add_argument("source", nargs="?", default=S, metavar="SOURCE",
                     help="source environment, e.g. CartPole-v1 or, randomized, "
                          "'CartPole-v1:length=uniform(0.25,1.0)'; your own env: "
                          "my_module:MyEnv-v0:size=8 (my_module registers it; outside the "
                          "catalog key=value are its constructor's arguments, TOML literals: "
                          "8, 0.2, true, \"hard\")")
    run.add_argument("target", nargs="?", default=S, metavar="TARGET",
                     help="target environment, e.g. CartPole-v1:length=1.0")
    _add_study_options(run)
    run.add_argument("--resume", action="store_true",
                     help="finish the study --name NAME: skip its done runs, run the rest again "
                          "(PPO/A2C from their last checkpoint), start it if it does not exist; "
                          "the options must be those it was started with")

    matrix = sub.add_parser(
        "matrix", help="a transfer matrix: every source x target study",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run every SOURCE x TARGET study (each source trained once, each target's "
                    "scratch runs trained once and reused) into runs/<name>/, then write "
                    "matrix.md, matrix.json and matrix.png with the area difference vs scratch "
                    "and the jumpstart per pair.",
        epilog="example:\n  python -m rltransfer matrix --sources CartPole-v1:length=0.25,"
               "CartPole-v1:length=0.5 \\\n      --targets CartPole-v1:length=1.0,"
               "CartPole-v1:length=2.0 --seeds 5\n"
               "  python -m rltransfer matrix --sources CartPole-v1 \\\n"
               "      --targets 'CartPole-v1:length=grid(0.25,2.0,8)' --seeds 10\n\n"
               "Environments are separated by ';' or by ',' before an env id (parameters "
               "keep their own commas).\nA sweep: name=grid(low,high,n) is n values evenly "
               "spaced from low to high, both\nincluded (n >= 2), one env each; several "
               "grids in one env give every combination\n(Cartesian product). matrix.png "
               "then adds the area difference and jumpstart\nagainst the swept value, one "
               "line per source, its value marked.\nA randomized env (e.g. "
               "'CartPole-v1:length=uniform(0.25,1.0)', see run --help)\nis a source or "
               "target like any other.")
    matrix.add_argument("--sources", required=True, metavar="ENVS",
                        help="source environments, e.g. CartPole-v1:length=0.25;"
                             "CartPole-v1:length=0.5 (grid(low,high,n) as for --targets)")
    matrix.add_argument("--targets", required=True, metavar="ENVS",
                        help="target environments, same syntax; name=grid(low,high,n) sweeps "
                             "a parameter, e.g. 'CartPole-v1:length=grid(0.25,2.0,8)'")
    _add_study_options(matrix)
    matrix.add_argument("--resume", action="store_true",
                        help="finish the matrix --name NAME, e.g. after an interruption or "
                             "with more --workers: done studies are kept untouched, the others "
                             "resumed as by run --resume; start it if it does not exist. The "
                             "sources, targets and study options must be those it was started "
                             "with (execution options such as --workers may differ)")

    resume = sub.add_parser(
        "resume", help="finish an interrupted study",
        description="Finish the study in STUDY_DIR with the options it was started with: runs "
                    "that are done are kept, the others run again (PPO and A2C runs continue "
                    "from their last checkpoint; DQN, SAC and TD3 runs start over, since a "
                    "checkpoint does not hold their replay buffer). Rows of evaluations.csv "
                    "are never doubled. Then the summary is recomputed.")
    resume.add_argument("study", metavar="STUDY_DIR", help="a study folder, e.g. runs/<study>")
    resume.add_argument("--threshold", type=float, metavar="R",
                        help="a new threshold (normalized score 1), e.g. after the source's "
                             "own score could not set one; it only changes the normalized "
                             "scores, so it is taken while none of the study's target runs "
                             "is done, and refused after (default: the study's own)")
    _add_execution_options(resume)

    compare = sub.add_parser("compare", help="several studies in one table",
                             description="Put the conditions of several finished studies in "
                                         "one table and figure: compare.md, compare.json and "
                                         "compare.png, written in --out.")
    compare.add_argument("studies", nargs="+", metavar="STUDY_DIR",
                         help="study folders, e.g. runs/a runs/b")
    compare.add_argument("--out", metavar="DIR",
                         help="the folder to write compare.md, compare.json and compare.png "
                              "in (default: the folder that holds the first study, e.g. runs "
                              "for runs/a)")

    report = sub.add_parser("report", help="recompute a study's table and summary files",
                            description="Recompute summary.json, summary.csv, report.md and "
                                        "the table from a study folder's files alone.")
    report.add_argument("study", metavar="STUDY_DIR", help="a study folder, e.g. runs/<study>")

    board = sub.add_parser("tensorboard", help="start TensorBoard on a study (loopback only)",
                           description="Start TensorBoard on 127.0.0.1 for a study folder (or "
                                       "the whole runs folder), print its URL, and serve until "
                                       "Ctrl-C. Charts: eval/mean_reward per run; CUSTOM "
                                       "SCALARS: every condition's mean with its 95% band.")
    board.add_argument("study", nargs="?", default="runs", metavar="STUDY_DIR",
                       help="a study folder, e.g. runs/<study> (default: runs)")
    board.add_argument("--port", type=int, default=6006, help="port to serve on (default: 6006)")

    env_list = sub.add_parser("envs", help="list environment families and their parameters",
                              description="List environment families, their parameters "
                                          "(default, range, unit) and named variants: the "
                                          "catalog's and those installed packages declare "
                                          "(entry points rltransfer.families).")
    env_list.add_argument("family", nargs="?", metavar="FAMILY",
                          help="show one family in detail, e.g. CartPole")
    return parser


def _read_config(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"--config {path} does not exist: give the path of a TOML file") from None
    except IsADirectoryError:
        raise ConfigError(f"--config {path} is a folder: give the path of a TOML file") from None
    except UnicodeDecodeError as err:  # binary, or another encoding (TOML is UTF-8)
        raise ConfigError(f"--config {path} is not UTF-8 text (byte {err.start} cannot be "
                          f"read): give a TOML file saved as UTF-8") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"--config {path} is not valid TOML: {err}") from None
    except OSError as err:
        raise ConfigError(f"--config {path} cannot be read: {err.strerror or err}") from None
    def key_of(key: str) -> str:
        return key.replace("-", "_")

    return {key_of(key): {key_of(k): v for k, v in value.items()}
            if key_of(key) in PARTS and isinstance(value, dict) else value
            for key, value in data.items()}


def study_spec(args: argparse.Namespace) -> StudySpec:
    """Merge defaults < config file < command line into a StudySpec; the file may spell
    the options flat (``seeds = 3``) or in the spec's parts (``[protocol]``, ``seeds = 3``)."""
    values = flat_values(_read_config(args.config)) if args.config else {}
    cli = {k: v for k, v in vars(args).items()
           if k not in ("command", "config", "sources", "targets", *_EXECUTION_KEYS)}
    if "hparams" in cli:
        cli["hparams"] = {**values.get("hparams", {}), **_parse_overrides(cli["hparams"])}
    values.update(cli)
    if "source" not in values or "target" not in values:
        raise ConfigError("give SOURCE and TARGET environments (or set them in --config)")
    if isinstance(values.get("hparams"), list):
        values["hparams"] = _parse_overrides(values["hparams"])
    return StudySpec.from_dict(values)


def _parse_overrides(items: list[str]) -> dict[str, Any]:
    from .training.algos import parse_overrides  # imports torch: only when there are --hparams

    return parse_overrides(items)


def _start_workers_early(spec: StudySpec, execution: Execution) -> None:
    """Start the server that worker processes fork from before this process imports torch
    and checks the study, so the two overlap on separate cores, when the study may use
    worker processes. A study process (`python -m rltransfer run`) starts it anyway, with
    only the report's imports, so they happen on the other core while the run trains."""
    execution.validate()
    if will_use_workers(execution, len(spec.transfer.conditions) * spec.protocol.seeds):
        start_worker_server()
    elif _PROCESS["command"] and execution.backend == "local":
        start_worker_server(workers=False)  # the report's libraries, for the end


def _cmd_run(args: argparse.Namespace, argv: list[str], console: Console) -> int:
    study_dir = run_from_args(args, argv, console)
    from .report.tables import terminal_table

    return _print_summary(summarize_elsewhere(study_dir), study_dir, console, terminal_table)


def run_from_args(args: argparse.Namespace, argv: list[str], console: Console) -> Path:
    """Run the study of parsed `run` arguments (`argv`: its command line, recorded as the
    command that reproduces it); returns its folder. Shared with `rltransfer.run`."""
    spec = study_spec(args)
    execution = _execution(args)
    _start_workers_early(spec, execution)
    from .study.runner import run_study

    command = "python -m rltransfer " + shlex.join(
        [a for a in argv if a != "--resume"])  # the command that reproduces the study
    return run_study(spec, command=command, console=console, execution=execution,
                     resume=args.resume)


def _cmd_resume(args: argparse.Namespace, console: Console) -> int:
    from .report.tables import terminal_table
    from .study.runner import resume_study

    study_dir = resume_study(Path(args.study), console=console, execution=_execution(args),
                             threshold=args.threshold)
    return _print_summary(summarize_elsewhere(study_dir), study_dir, console, terminal_table)


def _print_summary(result: StudySummary, study_dir: Path, console: Console, table_fn) -> int:
    """Print the summary; the exit status: 1 when runs failed (their results are missing)."""
    console.print(table_fn(result))
    if result.score == "success":
        console.print(f"score: success rate; random policy {result.random_return:.4g}; scores "
                      f"normalized 0=random, 1=100% success", highlight=False, markup=False)
    else:
        console.print(f"threshold {result.threshold:g} ({result.threshold_from}), "
                      f"random policy {result.random_return:.4g}; scores normalized 0=random, "
                      f"1=threshold", highlight=False, markup=False)
    asked = result.requested_budget
    if asked and asked != result.budget:
        low, high = result.evaluations.trained or (result.budget, result.budget)
        trained = f"{low:,}" if low == high else f"{low:,} to {high:,}"
        console.print(f"budget: the runs trained {trained} env steps (--timesteps {asked:,}, "
                      f"rounded up to whole rollouts or updates); the metrics use the first "
                      f"{result.budget:,}", highlight=False, markup=False)
    for warning in result.warnings:
        console.print(f"warning: {warning}", style="yellow", markup=False, highlight=False)
    for name, data in result.conditions.items():
        verdict = data.verdict
        if verdict is not None and verdict.reading:
            console.print(f"{name}: {verdict.label}: {verdict.reading}", markup=False,
                          highlight=False)
    if result.seed_note:
        console.print(f"seeds: {result.seed_note}", style="yellow", markup=False,
                      highlight=False)
    if result.verdict_rule:
        from .report.verdict import short_rule

        console.print(f"rule: {short_rule(result.alpha)}", style="dim", markup=False,
                      highlight=False)
    console.print(f"report: {study_dir / 'report.html'}, {study_dir / 'report.md'}, "
                  f"{study_dir / 'curves.png'}, {study_dir / 'summary.json'}, "
                  f"{study_dir / 'summary.csv'}", highlight=False, markup=False)
    console.print(f"curves: {self_command()} tensorboard {study_dir}", highlight=False,
                  markup=False)
    failed = sum(len(runs.failed) for runs in result.runs.values())
    if failed:
        console.print(f"{failed} run(s) failed; fix the cause, then: python -m rltransfer "
                      f"resume {study_dir}", style="red", highlight=False, markup=False)
    return 1 if failed else 0


def self_command() -> str:
    """How to run rltransfer again from the user's shell: "python -m rltransfer" where that
    `python` is this interpreter (an activated venv), else this interpreter's path, e.g.
    ".venv/bin/python -m rltransfer" after `make demo`, which activates nothing."""
    import os
    import shutil

    executable = os.path.abspath(sys.executable)
    found = shutil.which("python")
    if found and os.path.dirname(os.path.abspath(found)) == os.path.dirname(executable):
        return "python -m rltransfer"
    relative = os.path.relpath(executable)
    return f"{executable if relative.startswith('..') else relative} -m rltransfer"


def _cmd_report(args: argparse.Namespace, console: Console) -> int:
    from .report.build import summarize_study, terminal_table

    study_dir = Path(args.study)
    return _print_summary(summarize_study(study_dir), study_dir, console, terminal_table)


def _cmd_matrix(args: argparse.Namespace, argv: list[str], console: Console) -> int:
    from .study.matrix import parse_env_list, run_matrix, summarize_matrix

    sources = parse_env_list(args.sources, "--sources")
    targets = parse_env_list(args.targets, "--targets")
    args.source, args.target = str(sources[0]), str(targets[0])  # validated per pair below
    base = study_spec(args)
    execution = _execution(args)
    _start_workers_early(base, execution)  # every study of the matrix forks from it
    command = "python -m rltransfer " + shlex.join(
        [a for a in argv if a != "--resume"])  # the command that reproduces the matrix
    folder = run_matrix(base, sources, targets, console=console, execution=execution,
                        command=command, resume=args.resume)
    summarize_matrix(folder)
    console.print((folder / "matrix.md").read_text(), markup=False, highlight=False)
    console.print(f"matrix: {folder / 'matrix.md'}, {folder / 'matrix.png'}, "
                  f"{folder / 'matrix.json'}", markup=False, highlight=False)
    return 0


def _cmd_compare(args: argparse.Namespace, console: Console) -> int:
    from .errors import OutputError
    from .io_utils import atomic_write_json, atomic_write_text
    from .report.compare import compare_markdown, compare_studies, compare_table

    out = Path(args.out) if args.out else compare_folder(Path(args.studies[0]))
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} is a file: give a folder for compare.md, compare.json "
                          "and compare.png")
    result = compare_studies([Path(s) for s in args.studies])
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "compare.json", result)
    atomic_write_text(out / "compare.md", compare_markdown(result))
    from .report.build import write_compare_figure

    write_compare_figure(out, [Path(s) for s in args.studies])
    console.print(compare_table(result))
    console.print(f"compare: {out / 'compare.md'}, {out / 'compare.png'}, "
                  f"{out / 'compare.json'}", markup=False, highlight=False)
    return 0


def compare_folder(first_study: Path) -> Path:
    """Where `compare` writes without --out: beside the first study, in the folder that holds
    it ("runs" for runs/a; for "." or "..", the absolute folder above it)."""
    import os

    folder = Path(os.path.normpath(first_study))
    if folder.name in ("", ".", ".."):
        return Path(os.path.abspath(folder)).parent
    return folder.parent


def _cmd_tensorboard(args: argparse.Namespace, console: Console) -> int:
    import time

    from .report.board import start_tensorboard

    _, url = start_tensorboard(Path(args.study), args.port)
    console.print(f"TensorBoard for {args.study}: {url}  (Ctrl-C to stop)", markup=False,
                  highlight=False)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0


def _cmd_envs(args: argparse.Namespace, console: Console) -> int:
    from . import envs as catalog

    families = catalog.families()
    if args.family is None:
        table = Table(title="environment families (python -m rltransfer envs FAMILY for details)",
                      title_justify="left")
        for column in ("family", "Gymnasium ids", "parameters", "named variants"):
            table.add_column(column, overflow="fold")
        for family in families.values():
            table.add_row(family.name, _listed_ids(family, list(families.values())),
                          ", ".join(family.parameter_names),
                          ", ".join(family.variants))
        console.print(table)
        console.print("Named variants are registered as rltransfer/<family>-<variant>-v0, e.g. "
                      "rltransfer/CartPole-LongPole-v0. Any registered Gymnasium id also works, "
                      "without parameters.", highlight=False)
        return 0
    family = catalog.get_family(args.family)
    if family is None:
        raise ConfigError(f"unknown family {args.family!r}: choose from {', '.join(families)}."
                          + did_you_mean(args.family, families))
    table = Table(title=f"{family.name} ({', '.join(family.env_ids)}): {family.doc}",
                  title_justify="left")
    for column in ("parameter", "default", "range", "unit", "per episode", "description"):
        table.add_column(column)
    for p in family.parameters:
        if p.value_type is str:  # a name: its valid names are its range
            table.add_row(p.name, str(p.default), _valid_names(family, p), p.unit, "no", p.doc)
            continue
        table.add_row(p.name, f"{p.default:g}", f"[{p.low:g}, {p.high:g}]", p.unit,
                      "yes" if p.randomizable else "no", p.doc)
    console.print(table)
    if any(p.randomizable for p in family.parameters):
        console.print("  per episode: yes = may be a distribution redrawn at every reset, e.g. "
                      "name=uniform(a,b), loguniform(a,b), choice(x,y,...), normal(mu,sigma) "
                      "(README: Domain randomization)", highlight=False)
    for variant, params in family.variants.items():
        values = ",".join(f"{k}={v:g}" for k, v in params.items())
        console.print(f"  {family.variant_id(variant)}  =  {family.base_id}:{values}",
                      highlight=False)
    return 0


def _valid_names(family: Any, parameter: Any) -> str:
    """A name-valued parameter's names for the `envs` table (Meta-World's come from its
    package: without it, how to install it)."""
    try:
        names = " | ".join(parameter.valid_names())
    except MissingDependencyError:
        return rf"(pip install 'rltransfer\[{family.extra}]' to list them)"  # \[: not markup
    return f"{names} (several joined by {parameter.separator!r})" if parameter.separator else names


def _listed_ids(family: Any, families: list[Any]) -> str:
    """A family's ids for the `envs` table, without those a family listed before it has (the
    generic Atari family's example is Pong's id): then what the family covers instead."""
    others = {i for f in families[:families.index(family)] for i in f.env_ids}
    ids = [i for i in family.env_ids if i not in others]
    if ids:
        return ", ".join(ids)
    return f"any other id of {family.entry_point.rpartition(':')[2] or family.name}"


_PROCESS = {"command": False}
"""Whether `main` runs as the process's own command (not called from Python, e.g. a test)."""


def _dispatch(args: argparse.Namespace, argv: list[str], console: Console) -> int:
    if args.command == "run":
        return _cmd_run(args, argv, console)
    if args.command == "resume":
        return _cmd_resume(args, console)
    if args.command == "report":
        return _cmd_report(args, console)
    if args.command == "matrix":
        return _cmd_matrix(args, argv, console)
    if args.command == "compare":
        return _cmd_compare(args, console)
    if args.command == "tensorboard":
        return _cmd_tensorboard(args, console)
    return _cmd_envs(args, console)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``rltransfer`` and ``python -m rltransfer``; returns the exit status."""
    entry_point = argv is None  # the process's own command, which exits next
    _PROCESS["command"] = entry_point
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _build_parser().parse_args(argv)
    console = Console()
    if not console.is_terminal:  # logs and pipes: do not fold the table at 80 columns
        console = Console(width=160)
    previous = signal.signal(signal.SIGTERM, _terminate)  # schedulers stop jobs with SIGTERM
    try:
        return _dispatch(args, argv, console)
    except RLTransferError as err:  # bad input: 2; a fault (a disk that failed): 1
        sys.stderr.write(f"rltransfer: error: {err}\n")
        return int(getattr(err, "exit_status", 2))
    except OSError as err:  # e.g. the report's files on a disk that filled up
        from .io_utils import disk_fault

        fault = disk_fault(err)
        if fault is None:
            raise
        sys.stderr.write(f"rltransfer: error: cannot write ({fault.reason}); {fault.fix}, then "
                         f"run the command again\n")
        return 1
    except Terminated:
        sys.stderr.write("rltransfer: terminated (SIGTERM); finished runs and their files are "
                         "kept\n")
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        sys.stderr.write("rltransfer: interrupted; finished runs and their files are kept\n")
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        if entry_point:
            # The process exits next. Shutdown's garbage collections walk every object torch
            # and SB3 created (about a second); frozen objects are left out of them.
            gc.freeze()


class Terminated(KeyboardInterrupt):
    """SIGTERM: handled as Ctrl-C (the running runs are marked interrupted), but the process
    exits with 143 (128 + SIGTERM), as a terminated process does."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated  # so the running run is marked interrupted, as for Ctrl-C
