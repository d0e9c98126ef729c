"""How similar are source and target (`rltransfer.study.similarity`), and the matrix's rank
correlation between each measure and the area difference (`report.rank_correlation`)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from rltransfer.cli import main
from rltransfer.env_factory import make_vec
from rltransfer.io_utils import atomic_write_json, read_json
from rltransfer.report import rank_correlation
from rltransfer.report.summary import StudySummary
from rltransfer.specs import EnvSpec
from rltransfer.study import similarity
from rltransfer.study.plan import plan
from rltransfer.study.study_spec import StudySpec, flat_spec

TINY = ["--seeds", "2", "--timesteps", "256", "--source-timesteps", "256", "--eval-freq", "128",
        "--eval-episodes", "2", "--n-envs", "2", "--workers", "1",
        "--hparams", "n_steps=64", "batch_size=64", "n_epochs=1"]
BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "similarity_coverage.py"


def _plan(source: str, target: str, tmp_path: Path, **options):
    return plan(StudySpec.build(EnvSpec.parse(source), EnvSpec.parse(target),
                                out=str(tmp_path), name="s", eval_episodes=2, **options))


def _untrained_source(plan_, tmp_path: Path) -> Path:
    """A freshly initialized source policy, saved as a study saves one."""
    from rltransfer.training.run import build_model, save_model

    run = plan_.source_run()
    env = make_vec(run.env, run.agent.n_envs, seed=0)
    try:
        model = build_model(run, env)
    finally:
        env.close()
    path = tmp_path / "model.zip"
    save_model(model, path)
    return path


def test_the_same_env_cannot_be_told_apart_and_a_longer_pole_can(tmp_path):
    same = _plan("CartPole-v1", "CartPole-v1", tmp_path)
    model = _untrained_source(same, tmp_path)
    found = similarity.measure(same, model, 256)
    # the same env, on the same seeds: the same transitions, nothing to tell apart
    assert found["classifier"]["accuracy"] == pytest.approx(0.5, abs=0.05)
    assert found["feature_distance"]["value"] == pytest.approx(0.0, abs=1e-6)
    assert found["classifier"]["n_test"] == 64  # 2 of the 8 envs' 32 steps, held out
    assert found["classifier"]["dims"] == 4 + 2 + 4  # s, one-hot a, s'
    assert found["zero_shot"]["episodes"] == 2 and found["notes"] == []

    longer = _plan("CartPole-v1", "CartPole-v1:length=2.0", tmp_path)
    apart = similarity.measure(longer, model, 256)
    assert apart["classifier"]["accuracy"] > 0.75
    assert apart["feature_distance"]["value"] > 0.01
    heavier = similarity.measure(_plan("CartPole-v1", "CartPole-v1:gravity=30", tmp_path),
                                 model, 256)
    assert heavier["classifier"]["accuracy"] > 0.6  # 3 x the gravity: subtler, still seen

    # the zero-shot score is the source policy's deterministic evaluation on the target
    from stable_baselines3 import PPO

    from rltransfer.training.contrib import evaluate_policy
    from rltransfer.training.run import EVAL_SEED_OFFSET

    env = make_vec(longer.spec.env.target, 2, seed=EVAL_SEED_OFFSET)
    returns, _ = evaluate_policy(PPO.load(model, device="cpu"), env, n_eval_episodes=2,
                                 deterministic=True, return_episode_rewards=True)
    env.close()
    assert apart["zero_shot"]["mean_return"] == pytest.approx(float(np.mean(returns)))


def test_a_source_that_cannot_act_on_the_target_is_said_and_images_use_features(tmp_path):
    other = _plan("CartPole-v1", "Acrobot-v1", tmp_path)
    found = similarity.measure(other, _untrained_source(other, tmp_path), 64)
    assert found["skipped"] == ("the source policy observes Box(4,) and acts in Discrete(2), "
                                "the target observes Box(6,) and acts in Discrete(3): it "
                                "cannot act on the target")
    assert found["classifier"] is None and found["zero_shot"] is None

    pixels = _plan("rltransfer/PixelCatch-v0", "rltransfer/PixelCatch-v0:ball_hue=0.33",
                   tmp_path, frame_stack=1)
    found = similarity.measure(pixels, _untrained_source(pixels, tmp_path), 64)
    assert found["classifier"]["rows"].startswith("(features(s), a, features(s'))")
    assert found["classifier"]["dims"] == 512 + 3 + 512  # NatureCNN's features, a, s'
    assert found["feature_distance"]["features"] == 512


def _study(tmp_path, *extra):
    return ["run", "CartPole-v1", "CartPole-v1:length=2.0", "--out", str(tmp_path),
            "--name", "s", *TINY, *extra]


def test_a_study_measures_once_records_it_everywhere_and_a_resume_reuses_it(
        tmp_path, capsys, monkeypatch):
    calls = []
    real = similarity.measure

    def counted(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(similarity, "measure", counted)
    assert main(_study(tmp_path, "--similarity", "128")) == 0
    study = tmp_path / "s"
    assert "similarity of source and target (" in capsys.readouterr().out
    assert len(calls) == 1
    recorded = read_json(study / "similarity.json")
    assert recorded["transitions"] == 128 and recorded["skipped"] is None
    assert flat_spec(read_json(study / "study.json")["spec"])["similarity"] == 128
    # finetune's step 0 is the source policy on the target, before any update
    first = (study / "finetune" / "seed_0" / "evaluations.csv").read_text().splitlines()[1]
    assert float(first.split(",")[1]) == recorded["zero_shot"]["mean_return"]

    text = (study / "summary.json").read_text()
    summary = StudySummary.from_dict(json.loads(text))
    assert json.dumps(summary.to_dict(), indent=2) + "\n" == text
    found = summary.similarity
    assert found.zero_shot == recorded["zero_shot"]["mean_return"]
    assert found.zero_shot_normalized == pytest.approx(
        (found.zero_shot - summary.random_return) / (summary.threshold - summary.random_return))
    assert found.classifier_accuracy == recorded["classifier"]["accuracy"]
    assert found.feature_distance == recorded["feature_distance"]["value"]
    report = (study / "report.md").read_text()
    assert "## How similar are source and target?" in report
    assert f"held-out accuracy {found.classifier_accuracy:.2f}" in report
    assert "How similar are source and target?</h2>" in (study / "report.html").read_text()

    before = (study / "similarity.json").read_bytes(), (study / "similarity.json").stat()
    assert main(["resume", str(study)]) == 0
    assert len(calls) == 1  # reused, not measured again
    after = (study / "similarity.json").read_bytes(), (study / "similarity.json").stat()
    assert after[0] == before[0] and after[1].st_mtime_ns == before[1].st_mtime_ns

    (study / "similarity.json").write_text('{"zero_shot": ')  # cut short: measured again
    assert main(["report", str(study)]) == 0
    assert read_json(study / "summary.json")["similarity"]["skipped"].startswith(
        "similarity.json cannot be read (")
    assert main(["resume", str(study)]) == 0
    assert len(calls) == 2
    again = read_json(study / "similarity.json")  # the same seeds: the same measures
    assert {**again, "seconds": None} == {**recorded, "seconds": None}


@pytest.mark.parametrize("extra,reason", [
    (["--similarity", "0"], "--similarity 0: not measured"),
    (["--conditions", "scratch", "--threshold", "400"],
     "no source policy: the study trains scratch only, with --threshold"),
])
def test_a_study_that_measures_nothing_says_why(tmp_path, monkeypatch, extra, reason):
    def never(*args, **kwargs):
        raise AssertionError("measured")

    monkeypatch.setattr(similarity, "measure", never)
    assert main(_study(tmp_path, "--seeds", "1", *extra)) == 0
    study = tmp_path / "s"
    assert read_json(study / "similarity.json")["skipped"] == reason
    assert read_json(study / "summary.json")["similarity"]["skipped"] == reason
    assert f"- **not measured**: {reason}" in (study / "report.md").read_text()


@pytest.mark.parametrize("value,message", [
    ("-1", "rltransfer: error: --similarity must be 0 (off) or a number of transitions per "
           "side from 16 to 100,000, got -1\n"),
    ("8", "rltransfer: error: --similarity must be 0 (off) or a number of transitions per "
          "side from 16 to 100,000, got 8\n"),
    ("many", "rltransfer run: error: argument --similarity: invalid int value: 'many' (see "
             "rltransfer run --help)\n"),
])
def test_a_bad_similarity_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, value,
                                                                 message):
    try:
        code = main(_study(tmp_path, "--similarity", value))
    except SystemExit as exit_:  # argparse's own check
        code = exit_.code
    assert code == 2
    assert capsys.readouterr().err == message
    assert list(tmp_path.iterdir()) == []


def test_the_help_explains_similarity(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--similarity N how similar source and target are" in text
    assert (f"N transitions per side; 0 turns it off (default: "
            f"{similarity.DEFAULT_TRANSITIONS})") in text


# --------------------------------------------------------------------------- the matrix


def test_rank_correlation_is_scipys_spearman_with_ties():
    x = [0.5, 0.5, 0.9, 0.7, 1.0, 1.0, 0.6, 0.8]
    y = [0.1, -0.2, 0.4, 0.3, 0.2, 0.5, -0.1, 0.35]
    found = rank_correlation.rank_correlation(x, y)
    assert found.rho == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    assert found.n == 8 and found.low < found.rho < found.high
    rows = np.array([x, y[::-1]])
    assert rank_correlation.spearman(rows, np.array([y, x])) == pytest.approx(
        [stats.spearmanr(x, y).statistic, stats.spearmanr(y[::-1], x).statistic])
    # pairs without a measure are left out; too few pairs: r_s without an interval
    short = rank_correlation.rank_correlation([1, 2, None, 3, 4, 5], [2, 1, 7, 4, 3, 5])
    assert (short.n, short.low, short.high) == (5, None, None)
    assert short.rho == pytest.approx(stats.spearmanr([1, 2, 3, 4, 5], [2, 1, 4, 3, 5])[0])
    assert rank_correlation.min_pairs(0.95) == 6
    flat = rank_correlation.rank_correlation([1, 1, 1, 1, 1, 1], [1, 2, 3, 4, 5, 6])
    assert flat.rho is None and flat.note == "the measure is the same for every pair"


STEPS = [0, 100, 200, 300, 400]


def test_a_matrix_ranks_each_measure_against_the_area_difference(tmp_path, write_run):
    """Six hand-made studies (3 sources x 2 targets) with known measures and areas: matrix.json
    holds scipy's Spearman of each measure against finetune's area difference."""
    from rltransfer.study.matrix import summarize_matrix

    sources = [EnvSpec.parse(f"CartPole-v1:length={v}") for v in (0.25, 0.5, 1.0)]
    targets = [EnvSpec.parse(f"CartPole-v1:length={v}") for v in (1.5, 2.0)]
    folder = tmp_path / "m"
    atomic_write_json(folder / "matrix_spec.json", {
        "command": "", "sources": [s.to_dict() for s in sources],
        "targets": [t.to_dict() for t in targets],
        "base": {"conditions": ["scratch", "finetune"], "alpha": 0.05}})
    rng = np.random.default_rng(0)
    measures, areas = {"zero_shot": [], "classifier": [], "distance": []}, []
    for k, (target, source) in enumerate((t, s) for t in targets for s in sources):
        study = folder / f"{source.slug}--{target.slug}"
        atomic_write_json(study / "study.json", {
            "spec": {"source": source.to_dict(), "target": target.to_dict(), "algo": "ppo",
                     "conditions": ["scratch", "finetune"], "seeds": 3, "seed": 0,
                     "timesteps": 400, "source_timesteps": 400, "out": str(folder)},
            "target_agent": {"hparams": {}}, "threshold": 100.0,
            "threshold_from": "--threshold", "target_random_return": 0.0})
        lift = [0.0, 40.0, 10.0, 25.0, 5.0, 30.0][k]
        for seed in range(3):
            write_run(study / "scratch" / f"seed_{seed}", STEPS,
                      list(np.array([0, 40, 80, 110, 120]) + rng.normal(0, 2, 5)))
            write_run(study / "finetune" / f"seed_{seed}", STEPS,
                      list(np.array([0, 40, 80, 110, 120]) + lift + rng.normal(0, 2, 5)))
        zero_shot, accuracy, distance = 10.0 * k % 37, [0.6, 0.9, 0.7, 0.7, 1.0, 0.55][k], k / 7
        atomic_write_json(study / similarity.FILE, {
            "transitions": 64, "skipped": None, "notes": [],
            "zero_shot": {"mean_return": zero_shot, "episodes": 2},
            "classifier": {"accuracy": accuracy, "n_test": 16, "rows": "(s, a, s')"},
            "feature_distance": {"value": distance}})
        measures["zero_shot"].append(zero_shot / 100.0)
        measures["classifier"].append(accuracy)
        measures["distance"].append(distance)
    result = summarize_matrix(folder)
    found = result["similarity"]
    cells = result["cells"]["finetune"]
    areas = [cells[p["source"]][p["target"]]["auc_difference"]["point"]
             for p in found["pairs"]]
    correlations = found["correlations"]["finetune"]
    for key, values in (("zero_shot_normalized", measures["zero_shot"]),
                        ("classifier_accuracy", measures["classifier"]),
                        ("feature_distance", measures["distance"])):
        expected = stats.spearmanr(values, areas).statistic
        assert correlations[key]["rho"] == pytest.approx(expected, abs=1e-12)
        assert correlations[key]["n"] == 6
        assert correlations[key]["low"] < correlations[key]["rho"] < correlations[key]["high"]
    assert [p["zero_shot_normalized"] for p in found["pairs"]] == pytest.approx(
        measures["zero_shot"])
    markdown = (folder / "matrix.md").read_text()
    assert "## Does similarity predict transfer?" in markdown
    row = next(line for line in markdown.splitlines() if line.startswith("| finetune |"))
    assert f"{correlations['classifier_accuracy']['rho']:+.2f} [" in row


@pytest.fixture(scope="module")
def coverage_benchmark():
    spec = importlib.util.spec_from_file_location("similarity_coverage", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    sys.modules["similarity_coverage"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_the_interval_covers_at_the_pair_counts_of_a_matrix(coverage_benchmark):
    """1,000 simulated matrices per cell, through the real interval: every setting covers
    at least 93% (the goal is 95%; 3 binomial standard errors below it) at 6, 8 and 12
    pairs, and in a crossed 3 x 4 matrix; below 6 pairs no interval is given."""
    bench = coverage_benchmark
    rng = np.random.default_rng(7)
    settings = [s for s in bench.INDEPENDENT if s.name.startswith(
        ("no relation", "near perfect", "heavy-tailed copula (t2, 0.9)", "saturated"))]
    settings.append(bench.Setting("crossed 3 x 4", bench.crossed(3, 4, 1.5)))
    for setting in settings:
        true = bench.truth(setting)
        sizes = (12,) if setting.name.startswith("crossed") else (6, 8, 12)
        for n in sizes:
            covered, _ = bench.coverage(setting, n, 1000, rng, true)
            assert covered >= 0.93, (setting.name, n, covered)
    assert bench.coverage(settings[0], 5, 1000, rng, 0.0) is None
