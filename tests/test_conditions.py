"""The condition registry: every condition is one entry, spelled name or name:key=value."""

from __future__ import annotations

import pytest

from rltransfer.errors import ConfigError
from rltransfer.specs import CONDITIONS as SPEC_CONDITIONS
from rltransfer.specs import EnvSpec
from rltransfer.strategies import registry as conditions
from rltransfer.strategies.registry import CONDITIONS, Choice, Condition, Option, parse
from rltransfer.study.study_spec import StudySpec


def test_every_condition_is_one_registry_entry():
    assert SPEC_CONDITIONS == ("scratch", "finetune", "freeze-features", "reinit-head",
                               "pretrained-encoder", "kickstart", "jsrl", "replay",
                               "qdagger", "align", "progressive", "darc")
    assert [c for c in CONDITIONS if CONDITIONS[c].needs_source] == [
        "finetune", "freeze-features", "reinit-head", "kickstart", "jsrl", "replay",
        "qdagger", "align", "progressive", "darc"]
    assert CONDITIONS["freeze-features"].freezes == conditions.FEATURES
    assert CONDITIONS["reinit-head"].copies == conditions.FEATURES
    assert CONDITIONS["finetune"].copies == conditions.ALL
    assert CONDITIONS["pretrained-encoder"].hooks == "rltransfer.strategies.encoder:HOOKS"
    assert not CONDITIONS["scratch"].needs_source


@pytest.mark.parametrize(("text", "message"), [
    ("finetunee", "unknown condition 'finetunee': choose from scratch, finetune, "
                  "freeze-features, reinit-head, pretrained-encoder, kickstart, jsrl, replay, "
                  "qdagger, align, progressive, darc. Did you mean 'finetune'?"),
    ("scratch:lr_scale=0.1", "condition 'scratch' takes no options (got 'lr_scale'): write "
                             "scratch"),
    ("reinit-head:layers=1", "condition 'reinit-head' has no option 'layers': valid options "
                             "are lr_scale, norm, eps, obs_map."),
    ("finetune:lr_scale=0", "condition 'finetune:lr_scale=0': lr_scale must be a number in "
                            "(0, 1], got 0"),
    ("finetune:lr_scale=1.5", "condition 'finetune:lr_scale=1.5': lr_scale must be a number in "
                              "(0, 1], got 1.5"),
    ("reinit-head:lr_scale=nan", "condition 'reinit-head:lr_scale=nan': lr_scale must be a "
                                 "number in (0, 1], got nan"),
    ("freeze-features:layers=0", "condition 'freeze-features:layers=0': layers must be an "
                                 "integer >= 1, got 0"),
    ("freeze-features:layers=1.5", "condition 'freeze-features:layers=1.5': layers must be "
                                   "int, got '1.5'"),
    ("finetune:0.1", "condition 'finetune:0.1': options are key=value, e.g. finetune:key=1"),
])
def test_bad_spellings_are_one_line_errors(text, message):
    with pytest.raises(ConfigError) as error:
        parse(text)
    assert str(error.value) == message


def test_options_parse_check_and_have_a_canonical_spelling():
    demo = Condition("demo", "a condition with options", options=(
        Option("lr_scale", float, 1.0, "learning-rate factor"),
        Option("layers", int, 0, "layers frozen")))
    choice = Choice(demo, {"layers": 2, "lr_scale": 0.1})
    assert choice.label == "demo:layers=2,lr_scale=0.1"
    assert Choice(demo, {"lr_scale": 1.0}).label == "demo"  # defaults are left out
    registry = dict(CONDITIONS, demo=demo)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(conditions, "CONDITIONS", registry)
        assert parse("demo:lr_scale=0.1, layers=2").label == "demo:layers=2,lr_scale=0.1"
        with pytest.raises(ConfigError, match="condition 'demo' has no option 'layer': valid "
                                              "options are lr_scale, layers. Did you mean "
                                              "'layers'"):
            parse("demo:layer=2")
        with pytest.raises(ConfigError, match="layers must be int, got 'two'"):
            parse("demo:layers=two")


def test_a_study_needs_a_source_only_for_conditions_that_take_one():
    def study(*names: str) -> StudySpec:
        return StudySpec.build(EnvSpec.parse("CartPole-v1"), EnvSpec.parse("CartPole-v1"),
                               conditions=names)
    assert not study("scratch").transfers
    assert not study("scratch", "pretrained-encoder").transfers
    assert study("scratch", "reinit-head").transfers
    with pytest.raises(ConfigError, match="lists a condition twice"):
        study("scratch", "scratch").validate()


def test_strategies_are_options_of_their_conditions():
    assert [o.key for o in CONDITIONS["finetune"].options] == ["lr_scale", "norm", "eps",
                                                                "obs_map"]
    assert [o.key for o in CONDITIONS["freeze-features"].options] == ["layers", "lr_scale",
                                                                       "norm", "eps", "obs_map"]
    assert [o.key for o in CONDITIONS["reinit-head"].options] == ["lr_scale", "norm", "eps",
                                                                   "obs_map"]
    choice = parse("freeze-features:lr_scale=0.50,layers=1")
    assert choice.label == "freeze-features:layers=1,lr_scale=0.5"
    assert choice.get("layers") == 1 and choice.get("lr_scale") == 0.5
    plain = parse("freeze-features")
    assert plain.get("layers") is None and plain.get("lr_scale") == 1.0  # all layers, one rate
    assert parse("finetune:lr_scale=1").label == "finetune"  # the default: plain finetune
    assert parse("scratch").get("lr_scale") is None


def test_a_list_of_conditions_splits_between_conditions_not_options():
    text = "scratch, freeze-features:layers=1,lr_scale=0.5,finetune:lr_scale=0.1,reinit-head"
    assert conditions.split(text) == ["scratch", "freeze-features:layers=1,lr_scale=0.5",
                                      "finetune:lr_scale=0.1", "reinit-head"]
    # an option's value may hold ':' (obs_map's slices): still the condition before it
    assert conditions.split("finetune:lr_scale=0.5,obs_map=[0:4>0:4],reinit-head:obs_map=x[0:1"
                            ">2:3]") == ["finetune:lr_scale=0.5,obs_map=[0:4>0:4]",
                                         "reinit-head:obs_map=x[0:1>2:3]"]
    spec = StudySpec.from_dict({"source": "CartPole-v1", "target": "CartPole-v1",
                                "conditions": text.replace(" ", "")})
    spec.validate()
    assert spec.transfer.conditions == tuple(conditions.split(text))
    with pytest.raises(ConfigError, match=r"--conditions: write scratch,finetune:lr_scale=0\.1 "):
        StudySpec.from_dict({"source": "CartPole-v1", "target": "CartPole-v1",
                             "conditions": "scratch,finetune:lr_scale=0.10"}).validate()


def test_run_help_lists_every_condition_and_option(capsys):
    from rltransfer.cli import main

    with pytest.raises(SystemExit) as done:
        main(["run", "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    listed = text[text.index("conditions (--conditions NAME"):]
    for condition in conditions.CONDITIONS.values():
        block = listed[listed.index(f"\n  {condition.name}"):]
        for option in condition.options:
            assert f"\n    {option.key}=" in block, (condition.name, option.key)
