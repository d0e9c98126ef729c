"""The nested study spec: its parts, flat and nested config files, the resolved type, the
cache keys it leads to (pinned: old caches stay valid) and study.json's formats."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from rltransfer.cli import _build_parser, main, study_spec
from rltransfer.errors import ConfigError
from rltransfer.io_utils import read_json
from rltransfer.specs import EnvSpec
from rltransfer.study.plan import plan
from rltransfer.study.study_spec import (
    STUDY_FORMAT,
    Protocol,
    ResolvedStudySpec,
    StudySpec,
    TransferSpec,
    flat_spec,
)

OLD_STUDY = Path(__file__).parent / "data" / "old_study"  # written by rltransfer 8bc0431


def _spec(**values) -> StudySpec:
    return StudySpec.build(EnvSpec.parse("CartPole-v1"), EnvSpec.parse("CartPole-v1:length=1.0"),
                           **values)


def test_the_parts_hold_the_options_and_round_trip_through_json():
    spec = _spec(seeds=3, algo="a2c", encoder="nature-cnn", out="elsewhere", pixels=True)
    assert spec.protocol == Protocol(seeds=3)
    assert spec.transfer == TransferSpec(encoder="nature-cnn")
    assert (spec.agent.algo, spec.env.pixels, spec.output.out) == ("a2c", True, "elsewhere")
    data = json.loads(json.dumps(spec.to_dict()))
    assert sorted(data) == ["agent", "env", "output", "protocol", "transfer"]
    assert data["protocol"]["seeds"] == 3 and data["env"]["target"]["params"] == {"length": 1.0}
    assert StudySpec.from_dict(data) == spec
    assert flat_spec(data) == {**flat_spec(spec.to_dict()), "seeds": 3}
    assert spec.transfer.encoder_config() == {"encoder": "nature-cnn", "weights": "imagenet",
                                              "freeze": True, "lr_scale": 0.1}


def test_flat_and_nested_options_name_the_same_spec():
    flat = StudySpec.from_dict({"source": "CartPole-v1", "target": "CartPole-v1", "seeds": 2,
                                "alpha": 0.01, "name": "x"})
    nested = StudySpec.from_dict({"env": {"source": "CartPole-v1", "target": "CartPole-v1"},
                                  "protocol": {"seeds": 2, "alpha": 0.01}, "name": "x"})
    assert flat == nested


@pytest.mark.parametrize("data,message", [
    ({"protocol": {"seedz": 2}}, "unknown option 'seedz' in [protocol]. Did you mean 'seed' or "
                                    "'seeds'? Valid options there: alpha,"),
    ({"protocol": {"seeds": 2}, "seeds": 3}, "seeds is given twice (flat and in [protocol]): "
                                             "give it once"),
    ({"agent": {"algo": 5}}, "algo must be a string, got 5"),
])
def test_bad_nested_options_are_one_line_errors(data, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        StudySpec.from_dict({"source": "CartPole-v1", "target": "CartPole-v1", **data})


def test_a_config_file_may_use_flat_keys_or_the_spec_tables(tmp_path):
    flat, nested = tmp_path / "flat.toml", tmp_path / "nested.toml"
    flat.write_text('source = "CartPole-v1"\ntarget = "CartPole-v1:length=1.0"\nseeds = 3\n'
                    'eval-episodes = 4\nhparams = { n_epochs = 1 }\nconditions = "scratch"\n')
    nested.write_text('[env]\nsource = "CartPole-v1"\ntarget = "CartPole-v1:length=1.0"\n'
                      '[agent]\nhparams = { n_epochs = 1 }\n[transfer]\nconditions = '
                      '["scratch"]\n[protocol]\nseeds = 3\neval-episodes = 4\n')
    specs = [study_spec(_build_parser().parse_args(["run", "--config", str(path), "--seed", "7"]))
             for path in (flat, nested)]
    assert specs[0] == specs[1]
    assert specs[0].protocol == Protocol(seeds=3, seed=7, eval_episodes=4)
    assert specs[0].agent.hparams == {"n_epochs": 1}


def test_plan_returns_a_resolved_spec_whose_budgets_are_set():
    resolved = plan(_spec(seeds=1, timesteps=256, source_timesteps=128, n_envs=2,
                          name="r")).spec
    assert isinstance(resolved, ResolvedStudySpec)
    assert (resolved.timesteps, resolved.source_timesteps, resolved.eval_freq) == (256, 128, 12)
    assert (resolved.n_envs, resolved.frame_stack, resolved.name) == (2, 1, "r")
    assert resolved.study_dir == Path("runs") / "r"
    with pytest.raises(ValueError, match="a resolved study spec needs timesteps, "
                                         "source_timesteps, eval_freq, n_envs, frame_stack"):
        ResolvedStudySpec(_spec().env)


# Computed by rltransfer 8bc0431 (before the nested spec): the cache entries of sources and
# scratch runs trained then must keep their names.
PINNED = {
    "state": ("CartPole-v1", "CartPole-v1:length=1.0", {}, "5f07818f9ee2b2a2"),
    "pixels": ("rltransfer/PixelCatch-v0", "rltransfer/PixelCatch-v0",
               {"conditions": ("scratch", "pretrained-encoder"), "encoder": "nature-cnn",
                "encoder_weights": "none", "augment": "random-shift"}, "4d375e08d4eae687"),
}


@pytest.mark.parametrize("case", sorted(PINNED))
def test_cache_keys_of_existing_specs_are_unchanged(case):
    source, target, values, expected = PINNED[case]
    resolved = plan(StudySpec.build(EnvSpec.parse(source), EnvSpec.parse(target), seeds=1,
                                    timesteps=256, source_timesteps=256, **values))
    run = resolved.source_run() if case == "state" else resolved.target_runs()[-1]
    assert run.cache_key == expected


def _old_study(tmp_path: Path) -> Path:
    study = tmp_path / "old"
    shutil.copytree(OLD_STUDY, study)
    return study


def test_a_study_written_in_the_old_flat_format_reports(tmp_path, capsys):
    study = _old_study(tmp_path)
    record = read_json(study / "study.json")
    assert "format" not in record and record["spec"]["seeds"] == 1  # format 1: flat
    assert main(["report", str(study)]) == 0
    summary = read_json(study / "summary.json")
    assert set(summary["metrics"]["conditions"]) == {"scratch", "finetune"}
    assert summary["alpha"] == 0.05 and summary["budget"] == 256
    assert "finetune" in (study / "report.md").read_text()


def test_a_study_written_in_the_old_flat_format_resumes_without_training(tmp_path, capsys,
                                                                         monkeypatch):
    from rltransfer.study import execution

    def no_training(*args, **kwargs):
        raise AssertionError("a done run was trained again")

    monkeypatch.setattr(execution, "execute", no_training)
    study = _old_study(tmp_path)
    before = (study / "finetune" / "seed_0" / "evaluations.csv").read_bytes()
    assert main(["resume", str(study), "--workers", "1"]) == 0
    assert capsys.readouterr().out.count("done before this resume") == 2
    assert (study / "finetune" / "seed_0" / "evaluations.csv").read_bytes() == before
    record = read_json(study / "study.json")
    assert [e["resume"] for e in record["executions"]] == [False, True]
    assert "format" not in record and record["spec"]["seeds"] == 1  # kept as it was written
    # its options are compared flat: a changed one is named as the CLI spells it
    assert main(["run", "CartPole-v1", "CartPole-v1:length=1.0", "--out", str(tmp_path),
                 "--name", "old", "--resume", "--seeds", "2", "--timesteps", "256",
                 "--source-timesteps", "256", "--eval-freq", "128", "--eval-episodes", "2"]) == 2
    assert "was started with other options (seeds: 1 there, 2 now)" in capsys.readouterr().err


def test_a_new_study_json_records_the_nested_spec_and_its_format(tmp_path):
    assert main(["run", "CartPole-v1", "CartPole-v1:length=1.0", "--conditions", "scratch",
                 "--seeds", "1", "--timesteps", "256", "--eval-freq", "128",
                 "--eval-episodes", "2", "--n-envs", "2", "--hparams", "n_steps=64",
                 "batch_size=64", "n_epochs=1", "--workers", "1", "--out", str(tmp_path),
                 "--name", "new"]) == 0
    record = read_json(tmp_path / "new" / "study.json")
    assert record["format"] == STUDY_FORMAT == 2
    assert record["spec"]["protocol"]["timesteps"] == 256
    assert record["spec"]["transfer"]["conditions"] == ["scratch"]
    assert StudySpec.from_dict(record["spec"]).output.name == "new"
