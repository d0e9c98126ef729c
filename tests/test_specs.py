"""EnvSpec parsing, validation errors, JSON round trips, stable hashes."""

from __future__ import annotations

import json
import pickle
import re

import pytest

from rltransfer.env_factory import resolve
from rltransfer.errors import ConfigError, ParameterError, UnknownEnvError
from rltransfer.specs import AgentSpec, EncoderSpec, EnvSpec, RunSpec, stable_hash
from rltransfer.strategies import registry
from rltransfer.study.study_spec import StudySpec


def test_parse_variant():
    spec = EnvSpec.parse("CartPole-v1:length=1.0,force_mag=5")
    assert spec == EnvSpec("CartPole-v1", {"length": 1.0, "force_mag": 5.0})
    assert str(spec) == "CartPole-v1:force_mag=5,length=1"
    assert EnvSpec.parse(str(spec)) == spec


@pytest.mark.parametrize("text,message", [
    ("CartPole-v1:length", "cannot read 'length' in 'CartPole-v1:length': parameters are "
                           "name=value"),
    ("CartPole-v1:length=abc", "length='abc' in 'CartPole-v1:length=abc' is not a number"),
    ("CartPole-v1:length=1,length=2", "length is given twice"),
])
def test_parse_errors(text, message):
    with pytest.raises(ParameterError, match=re.escape(message)):
        EnvSpec.parse(text)


def test_unknown_env_suggests_a_close_id():
    with pytest.raises(UnknownEnvError, match=re.escape(
            "unknown environment 'CartPol-v1'. Did you mean 'CartPole-v1'")):
        resolve(EnvSpec.parse("CartPol-v1"))


def test_unknown_parameter_lists_the_valid_ones():
    with pytest.raises(ParameterError, match=re.escape(
            "CartPole has no parameter 'lenght'. Did you mean 'length'? Valid parameters: "
            "gravity, masscart, masspole, length, force_mag, tau")):
        resolve(EnvSpec.parse("CartPole-v1:lenght=1"))


def test_value_out_of_range():
    with pytest.raises(ParameterError, match=re.escape(
            "length=100 is outside its valid range [0.05, 10] m")):
        resolve(EnvSpec.parse("CartPole-v1:length=100"))


def test_parameters_on_an_env_outside_the_catalog_are_its_constructor_arguments():
    # Taxi has no family: its parameters are gym.make keyword arguments, checked by name
    message = ("Taxi-v4 takes no argument 'rain'. Did you mean 'is_rainy'? Its constructor "
               "takes: is_rainy, fickle_passenger, rainy_probability, fickle_probability (it "
               "is not in rltransfer's catalog, so Taxi-v4:name=value passes keyword "
               "arguments to gym.make)")
    with pytest.raises(ParameterError) as err:
        resolve(EnvSpec.parse("Taxi-v4:rain=1"))
    assert str(err.value) == message
    family, base_id, params = resolve(EnvSpec.parse("Taxi-v4:is_rainy=true"))
    assert family is None and base_id == "Taxi-v4" and params == {"is_rainy": True}


def test_values_are_toml_literals_and_catalog_values_stay_floats():
    spec = EnvSpec.parse('Taxi-v4:is_rainy=true,rainy_probability=0.5')
    assert spec.params == {"is_rainy": True, "rainy_probability": 0.5}
    assert isinstance(EnvSpec.parse("Taxi-v4:x=3").params["x"], int)
    assert EnvSpec.parse('Taxi-v4:x="hard"').params["x"] == '"hard"'
    assert str(EnvSpec.parse('Taxi-v4:x="hard",y=false')) == 'Taxi-v4:x="hard",y=false'
    # a catalog family's values hash as they always did: length=1 is length=1.0
    assert EnvSpec.parse("CartPole-v1:length=1").params == {"length": 1.0}
    assert isinstance(EnvSpec.parse("CartPole-v1:length=1").params["length"], float)
    assert EnvSpec.parse("CartPole-v1:length=.5").params == {"length": 0.5}
    typed = EnvSpec.parse('Taxi-v4:a=3,b=0.5,c=true,d="x",e=uniform(0,1)')
    assert EnvSpec.from_dict(json.loads(json.dumps(typed.to_dict()))) == typed
    assert [type(v) for v in EnvSpec.from_dict(json.loads(json.dumps(typed.to_dict()))).params
            .values()] == [int, float, bool, str, str]


def test_run_spec_round_trip_and_stable_hash():
    agent = AgentSpec("ppo", {"n_steps": 32, "learning_rate": "lin_0.001"}, 8)
    run = RunSpec(EnvSpec.parse("CartPole-v1:length=1"), agent, "scratch", 0, 1000, 100, 5)
    again = RunSpec.from_dict(json.loads(json.dumps(run.to_dict())))
    assert again == run
    assert again.cache_key == run.cache_key
    reordered = AgentSpec("ppo", {"learning_rate": "lin_0.001", "n_steps": 32}, 8, "cuda")
    assert RunSpec(run.env, reordered, "scratch", 0, 1000, 100, 5).cache_key == run.cache_key
    assert RunSpec(run.env, agent, "scratch", 1, 1000, 100, 5).cache_key != run.cache_key
    assert stable_hash({"a": 1, "b": 2}) == stable_hash({"b": 2, "a": 1})


def test_a_run_spec_carries_its_parsed_condition_and_writes_its_spelling():
    agent = AgentSpec("ppo", {"n_steps": 32}, 1)
    run = RunSpec(EnvSpec("CartPole-v1"), agent, "finetune:lr_scale=0.1", 0, 1000, 100, 5)
    assert isinstance(run.condition, registry.Choice)  # parsed once, when the spec is made
    assert run.condition.condition is registry.CONDITIONS["finetune"]
    assert run.condition.get("lr_scale") == 0.1 and run.condition.get("norm") == "update"
    assert run.to_dict()["condition"] == "finetune:lr_scale=0.1"
    assert RunSpec(run.env, agent, registry.parse("finetune:lr_scale=0.1"), 0, 1000, 100,
                   5) == run
    assert RunSpec.from_dict(json.loads(json.dumps(run.to_dict()))) == run
    sent = pickle.loads(pickle.dumps(run))  # as a job travels to a worker process
    assert sent == run and sent.condition.condition is registry.CONDITIONS["finetune"]
    with pytest.raises(ConfigError, match="unknown condition 'finetunee'"):
        RunSpec(run.env, agent, "finetunee", 0, 1000, 100, 5)


def test_an_agents_encoder_round_trips_and_old_study_folders_read_back():
    encoder = EncoderSpec("resnet18", "imagenet", True, 0.1, "random-shift", 4)
    agent = AgentSpec("ppo", {"policy": "CnnPolicy", "policy_kwargs": {"net_arch": [64]}}, 2,
                      "cpu", encoder)
    data = json.loads(json.dumps(agent.to_dict()))
    assert data["encoder"] == {"name": "resnet18", "weights": "imagenet", "freeze": True,
                               "lr_scale": 0.1, "augment": "random-shift", "frame_stack": 4}
    assert AgentSpec.from_dict(data) == agent
    assert "encoder" not in AgentSpec("ppo", {}, 1).to_dict()  # state policies as before
    # status.json and study.json before EncoderSpec: the encoder inside policy_kwargs
    old = {"algo": "ppo", "n_envs": 2, "device": "cpu", "hparams": {
        "policy": "CnnPolicy", "policy_kwargs": {"net_arch": [64], "features_extractor": {
            "encoder": "resnet18", "weights": "imagenet", "freeze": True, "lr_scale": 0.1,
            "frame_stack": 4, "augment": "random-shift"}}}}
    assert AgentSpec.from_dict(old) == agent
    fresh = {"algo": "ppo", "n_envs": 1, "hparams": {"policy": "CnnPolicy", "policy_kwargs": {
        "features_extractor": {"encoder": "nature-cnn", "frame_stack": 2, "augment": None}}}}
    assert AgentSpec.from_dict(fresh) == AgentSpec("ppo", {"policy": "CnnPolicy"}, 1, "auto",
                                                   EncoderSpec(frame_stack=2))
    # and it names the cache entry it named then
    run = RunSpec(EnvSpec("CartPole-v1", pixels=True), AgentSpec.from_dict(old), "scratch", 0,
                  100, 10, 1)
    hashed = run.to_dict()
    hashed["agent"] = {k: v for k, v in old.items() if k != "device"}
    assert run.cache_key == stable_hash(hashed)


def test_study_spec_round_trip():
    spec = StudySpec.build(EnvSpec("CartPole-v1"), EnvSpec.parse("CartPole-v1:length=1"),
                           conditions=("scratch", "freeze-features"), hparams={"n_epochs": 4})
    assert StudySpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


@pytest.mark.parametrize("changes,message", [
    ({"conditions": ("scratch", "finetunee")}, "unknown condition 'finetunee'"),
    ({"seeds": 0}, "--seeds must be a positive integer, got 0"),
    ({"timesteps": -5}, "--timesteps must be a positive integer, got -5"),
    ({"source_timesteps": 0}, "--source-timesteps must be a positive integer, got 0"),
    ({"device": "gpu"}, "--device 'gpu' is not one of auto, cpu, cuda, cuda:N"),
    ({"name": "../x"}, "--name '../x' must be a folder name"),
])
def test_study_spec_validation(changes, message):
    spec = StudySpec.build(EnvSpec("CartPole-v1"), EnvSpec("CartPole-v1"), **changes)
    with pytest.raises(ConfigError, match=re.escape(message)):
        spec.validate()


def test_unknown_config_key_suggests():
    with pytest.raises(ConfigError, match=re.escape("unknown study option 'timestep'. Did you "
                                                    "mean 'timesteps'")):
        StudySpec.from_dict({"source": "CartPole-v1", "target": "CartPole-v1", "timestep": 5})
