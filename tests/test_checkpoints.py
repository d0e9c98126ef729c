"""--source-model adopts the checkpoint's network (read without unpickling) and hf://ORG/REPO
resolves through huggingface_hub's cache. No test touches the network: HF_HUB_OFFLINE=1."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pickle
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from stable_baselines3 import PPO, SAC

from rltransfer.cli import main
from rltransfer.env_factory import make_vec
from rltransfer.errors import CheckpointError, MissingDependencyError
from rltransfer.io_utils import read_json
from rltransfer.specs import EnvSpec
from rltransfer.training import algos, checkpoints
from rltransfer.training.transfer import apply_transfer, load_checkpoint

REVISION = "0123456789abcdef0123456789abcdef01234567"
SAC_STUDY = ["--algo", "sac", "--conditions", "finetune", "--seeds", "1", "--timesteps", "200",
             "--eval-freq", "100", "--eval-episodes", "1", "--threshold", "-200",
             "--workers", "1", "--hparams", "learning_starts=50", "batch_size=32"]
PPO_STUDY = ["--conditions", "finetune", "--seeds", "1", "--timesteps", "128", "--eval-freq",
             "64", "--eval-episodes", "2", "--n-envs", "1", "--workers", "1",
             "--hparams", "n_steps=64", "batch_size=64", "n_epochs=1"]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _shapes(state: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {name: tuple(tensor.shape) for name, tensor in state.items()}


@pytest.fixture(scope="module")
def sac_zip(tmp_path_factory) -> Path:
    """RL-Zoo's SAC Pendulum agent in miniature: net_arch [64, 64], gSDE, log_std_init -2."""
    path = tmp_path_factory.mktemp("sac") / "sac-Pendulum-v1.zip"
    model = SAC("MlpPolicy", make_vec(EnvSpec("Pendulum-v1"), 1, 0), use_sde=True,
                learning_starts=50, batch_size=32, seed=0,
                policy_kwargs=dict(net_arch=[64, 64], log_std_init=-2))
    model.learn(100)
    model.save(path)
    return path


@pytest.fixture(scope="module")
def ppo_zip(tmp_path_factory) -> Path:
    """A PPO CartPole checkpoint with separate 32-unit towers and ReLU (PPO's default: Tanh)."""
    path = tmp_path_factory.mktemp("ppo") / "ppo.zip"
    model = PPO("MlpPolicy", make_vec(EnvSpec("CartPole-v1"), 1, 0), n_steps=64, batch_size=64,
                n_epochs=1, seed=0, policy_kwargs=dict(net_arch=dict(pi=[32], vf=[32]),
                                                       activation_fn=torch.nn.ReLU))
    model.learn(64)
    model.save(path)
    return path


def _hub_cache(root: Path, repo: str, files: dict[str, Path | bytes]) -> Path:
    """A huggingface_hub cache as hf download leaves it: blobs named by content hash,
    snapshots/<commit> linking to them, refs/main naming the commit. Returns the snapshot."""
    folder = root / ("models--" + repo.replace("/", "--"))
    snapshot = folder / "snapshots" / REVISION
    (folder / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(REVISION)
    for name, content in files.items():
        data = content.read_bytes() if isinstance(content, Path) else content
        blob = folder / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        os.symlink(os.path.relpath(blob, snapshot), snapshot / name)
    return snapshot


@pytest.fixture(scope="module")
def sac_study(sac_zip, tmp_path_factory) -> tuple[Path, Path]:
    """A study whose source is hf://sb3/sac-Pendulum-v1, from a cache the test wrote."""
    root = tmp_path_factory.mktemp("hf")
    snapshot = _hub_cache(root / "hub", "sb3/sac-Pendulum-v1", {
        "sac-Pendulum-v1.zip": sac_zip, "config.yml": b"use_sde: true\n",
        "env_kwargs.yml": b"{}\n"})
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("HF_HUB_CACHE", str(root / "hub"))
        code = main(["run", "Pendulum-v1", "Pendulum-v1:m=1.5", "--source-model",
                     "hf://sb3/sac-Pendulum-v1", "--out", str(root / "runs"), "--name", "sac",
                     *SAC_STUDY])
    assert code == 0
    return root / "runs" / "sac", snapshot


def test_sac_gsde_checkpoint_is_adopted_and_its_tensors_all_load(sac_study, sac_zip):
    study, _ = sac_study
    record = read_json(study / "study.json")
    for agent in ("source_agent", "target_agent"):
        hparams = record[agent]["hparams"]
        assert hparams["use_sde"] is True
        assert hparams["policy_kwargs"] == {"net_arch": [64, 64], "log_std_init": -2,
                                            "n_critics": 2}
    source = read_json(study / "source" / "source.json")
    assert source["adopted"]["read_from"] == {"net_arch": "data", "log_std_init": "data",
                                              "use_sde": "data", "n_critics": "policy.pth shapes"}
    assert record["source"]["adopted"] == source["adopted"]
    transfer = read_json(study / "finetune" / "seed_0" / "transfer.json")
    assert transfer["copied"] == transfer["total"] == len(load_checkpoint(sac_zip).state_dict)
    # after learn(): the target run's policy has the checkpoint's network, and it trained
    trained = load_checkpoint(study / "finetune" / "seed_0" / "model.zip")
    original = load_checkpoint(sac_zip)
    assert _shapes(trained.state_dict) == _shapes(original.state_dict)
    assert trained.metadata["use_sde"] is True
    assert not torch.equal(trained.state_dict["actor.latent_pi.0.weight"],
                           original.state_dict["actor.latent_pi.0.weight"])


def test_hf_source_is_recorded_with_repo_revision_and_sha256(sac_study, sac_zip):
    study, snapshot = sac_study
    source = read_json(study / "source" / "source.json")
    assert source["hub"] == {"repo": "sb3/sac-Pendulum-v1", "revision": REVISION,
                             "file": "sac-Pendulum-v1.zip",
                             "sha256": hashlib.sha256(sac_zip.read_bytes()).hexdigest()}
    # the zip inside the snapshot folder (not its blob), so files beside it can be found
    assert source["path"] == str(snapshot / "sac-Pendulum-v1.zip")


def test_ppo_checkpoint_towers_and_activation_are_adopted(ppo_zip, tmp_path):
    code = main(["run", "CartPole-v1", "CartPole-v1:length=1.0", "--source-model", str(ppo_zip),
                 "--out", str(tmp_path), "--name", "ppo", *PPO_STUDY])
    assert code == 0
    study = tmp_path / "ppo"
    hparams = read_json(study / "study.json")["target_agent"]["hparams"]
    assert hparams["policy_kwargs"] == {"net_arch": {"pi": [32], "vf": [32]},
                                        "activation_fn": "relu"}
    assert hparams["use_sde"] is False
    transfer = read_json(study / "finetune" / "seed_0" / "transfer.json")
    assert transfer["copied"] == transfer["total"] == len(load_checkpoint(ppo_zip).state_dict)
    trained = load_checkpoint(study / "finetune" / "seed_0" / "model.zip")
    original = load_checkpoint(ppo_zip)
    assert _shapes(trained.state_dict) == _shapes(original.state_dict)
    assert not torch.equal(trained.state_dict["mlp_extractor.policy_net.0.weight"],
                           original.state_dict["mlp_extractor.policy_net.0.weight"])
    assert trained.metadata["policy_kwargs"]["activation_fn"] == (
        "<class 'torch.nn.modules.activation.ReLU'>")


def test_the_same_network_in_hparams_is_no_conflict(ppo_zip):
    given = {"policy_kwargs": {"net_arch": {"pi": [32], "vf": [32]}, "activation_fn": "ReLU"}}
    algo = algos.get_algorithm("ppo")
    (hparams,) = checkpoints.adopt_network(str(ppo_zip), algo, given, given)
    assert hparams["policy_kwargs"] == {"net_arch": {"pi": [32], "vf": [32]},
                                        "activation_fn": "relu"}


CONFLICTS = [
    (["CartPole-v1", "CartPole-v1", "--source-model", "{ppo}", "--hparams",
      "policy_kwargs={net_arch=[64,64]}"],
     "--hparams policy_kwargs.net_arch=[64, 64] contradicts --source-model {ppo}, whose net_arch "
     "is {'pi': [32], 'vf': [32]} (read from its data): drop policy_kwargs.net_arch from "
     "--hparams to adopt the checkpoint's network, or give a checkpoint with that network"),
    (["CartPole-v1", "CartPole-v1", "--source-model", "{ppo}", "--hparams",
      "policy_kwargs={activation_fn=\"tanh\"}"],
     "--hparams policy_kwargs.activation_fn='tanh' contradicts --source-model {ppo}, whose "
     "activation_fn is 'relu' (read from its data): drop policy_kwargs.activation_fn from "
     "--hparams to adopt the checkpoint's network, or give a checkpoint with that network"),
    (["Pendulum-v1", "Pendulum-v1", "--algo", "sac", "--source-model", "{sac}", "--hparams",
      "use_sde=false"],
     "--hparams use_sde=False contradicts --source-model {sac}, whose use_sde is True (read "
     "from its data): drop use_sde from --hparams to adopt the checkpoint's network, or give "
     "a checkpoint with that network"),
]


@pytest.mark.parametrize(("args", "message"), CONFLICTS)
def test_contradicting_hparams_are_one_line_errors(args, message, ppo_zip, sac_zip, tmp_path,
                                                   capsys):
    def fill(text: str) -> str:
        return text.replace("{ppo}", str(ppo_zip)).replace("{sac}", str(sac_zip))

    out = tmp_path / "runs"
    code = main(["run", *map(fill, args), "--out", str(out)])
    assert code == 2
    assert capsys.readouterr().err == f"rltransfer: error: {fill(message)}\n"
    assert not out.exists()


def _rewrite_data(path: Path, to: Path, change) -> None:
    """Copy the SB3 zip `path` to `to` with its data JSON passed through `change`."""
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(to, "w") as target:
        for item in source.infolist():
            content = source.read(item)
            if item.filename == "data":
                data = json.loads(content)
                change(data)
                content = json.dumps(data).encode()
            target.writestr(item, content)


def _blob_only(data: dict) -> None:
    """Leave only serialized blobs: no readable attributes, no use_sde, and policy_kwargs
    serialized even where SB3 wrote it as plain JSON (SAC's)."""
    kwargs = data["policy_kwargs"]
    if ":serialized:" not in kwargs:
        data["policy_kwargs"] = {":type:": "<class 'dict'>", ":serialized:":
                                 base64.b64encode(pickle.dumps(kwargs)).decode()}
    for key, value in list(data.items()):
        if isinstance(value, dict) and ":serialized:" in value:
            data[key] = {":type:": value[":type:"], ":serialized:": value[":serialized:"]}
    data.pop("use_sde", None)


def _builds_and_loads(path: Path, algo_name: str, env_id: str) -> dict:
    """Adopt `path`'s network into the env's preset, build SB3's model, load every tensor."""
    algo = algos.get_algorithm(algo_name)
    (hparams,) = checkpoints.adopt_network(str(path), algo, {}, algos.preset(algo_name, [env_id]))
    env = make_vec(EnvSpec(env_id), 1, 0)
    kwargs = algos.model_kwargs(hparams, env.action_space)
    model = algo.cls(hparams.get("policy", "MlpPolicy"), env, **kwargs)
    report = apply_transfer(model, load_checkpoint(path).state_dict, "finetune", str(path))
    assert report.copied == len(report.tensors) == len(load_checkpoint(path).state_dict)
    return hparams


def test_blob_only_data_is_adopted_from_shapes_and_opcodes(sac_zip, ppo_zip, tmp_path):
    sac_blobs, ppo_blobs = tmp_path / "sac.zip", tmp_path / "ppo.zip"
    _rewrite_data(sac_zip, sac_blobs, _blob_only)
    _rewrite_data(ppo_zip, ppo_blobs, _blob_only)
    sac = checkpoints.read_architecture(load_checkpoint(sac_blobs))
    assert sac.policy_kwargs == {"net_arch": [64, 64], "n_critics": 2} and sac.use_sde is True
    assert set(sac.read_from.values()) == {"policy.pth shapes"}
    ppo = checkpoints.read_architecture(load_checkpoint(ppo_blobs))
    assert ppo.policy_kwargs == {"net_arch": [32], "activation_fn": "relu"}
    assert ppo.read_from["activation_fn"] == "data (pickle opcodes, read without unpickling)"
    assert _builds_and_loads(sac_blobs, "sac", "Pendulum-v1")["use_sde"] is True
    _builds_and_loads(ppo_blobs, "ppo", "CartPole-v1")


SHAPE_CASES = [
    ("dqn", "CartPole-v1", {"net_arch": [48, 24]}, {}, {"net_arch": [48, 24]}, None),
    ("td3", "Pendulum-v1", {"net_arch": {"pi": [40], "qf": [30, 20]}, "n_critics": 1}, {},
     {"net_arch": {"pi": [40], "qf": [30, 20]}, "n_critics": 1}, None),
    ("a2c", "Pendulum-v1", {"net_arch": [16]}, {"use_sde": True}, {"net_arch": [16]}, True),
    ("sac", "Pendulum-v1", {"net_arch": [8, 8], "clip_mean": 0.0}, {"use_sde": True},
     {"net_arch": [8, 8], "n_critics": 2, "clip_mean": 0.0}, True),
]


@pytest.mark.parametrize(("algo", "env_id", "policy_kwargs", "extra", "expected", "sde"),
                         SHAPE_CASES)
def test_every_algorithm_s_network_is_read_from_shapes(algo, env_id, policy_kwargs, extra,
                                                       expected, sde, tmp_path):
    model = algos.get_algorithm(algo).cls("MlpPolicy", make_vec(EnvSpec(env_id), 1, 0),
                                          policy_kwargs=policy_kwargs, **extra)
    model.save(tmp_path / "saved.zip")
    _rewrite_data(tmp_path / "saved.zip", tmp_path / "blobs.zip", _blob_only)
    read = checkpoints.read_architecture(load_checkpoint(tmp_path / "blobs.zip"))
    assert read.policy_kwargs == expected and read.use_sde is sde
    _builds_and_loads(tmp_path / "blobs.zip", algo, env_id)


class _Payload:
    """Unpickling this writes a file: what a hostile checkpoint's blob could do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_serialized_blobs_are_never_unpickled(ppo_zip, tmp_path):
    marker = tmp_path / "unpickled"
    blob = base64.b64encode(pickle.dumps({"activation_fn": _Payload(marker),
                                          "net_arch": _Payload(marker)})).decode()

    def plant(data: dict) -> None:
        for key in ("policy_kwargs", "observation_space", "action_space", "policy_class"):
            data[key] = {":type:": "<class 'dict'>", ":serialized:": blob}

    hostile = tmp_path / "hostile.zip"
    _rewrite_data(ppo_zip, hostile, plant)
    hparams = _builds_and_loads(hostile, "ppo", "CartPole-v1")
    assert hparams["policy_kwargs"]["net_arch"] == [32]  # from the shapes
    assert "activation_fn" not in checkpoints.read_architecture(
        load_checkpoint(hostile)).policy_kwargs  # builtins.open is no activation
    assert not marker.exists()
    live = pickle.loads(base64.b64decode(blob))  # the payload is live: unpickling writes the file
    for handle in live.values():
        handle.close()
    assert marker.exists()


def test_hf_repo_missing_from_the_cache_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    out = tmp_path / "runs"
    code = main(["run", "Pendulum-v1", "Pendulum-v1", "--algo", "sac", "--source-model",
                 "hf://sb3/sac-Pendulum-v1", "--out", str(out)])
    assert code == 2
    cache = tmp_path / "hub"
    assert capsys.readouterr().err == (
        f"rltransfer: error: --source-model hf://sb3/sac-Pendulum-v1: sb3/sac-Pendulum-v1 is "
        f"not in the Hugging Face cache {cache} and HF_HUB_OFFLINE is set: fetch it first with "
        f"'hf download sb3/sac-Pendulum-v1 --cache-dir {cache}' (where the Hub can be "
        f"reached)\n")
    assert not out.exists()


def test_hf_cache_from_hf_home_and_the_zip_named_by_the_repo(sac_zip, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    snapshot = _hub_cache(tmp_path / "home" / "hub", "sb3/sac-Pendulum-v1", {
        "sac-Pendulum-v1.zip": sac_zip, "replay.zip": b"not this one"})
    path = checkpoints.resolve_source_model("hf://sb3/sac-Pendulum-v1")
    assert path == snapshot / "sac-Pendulum-v1.zip" and path.is_symlink()
    _hub_cache(tmp_path / "home" / "hub", "sb3/other", {"a.zip": b"a", "b.zip": b"b"})
    with pytest.raises(CheckpointError, match="sb3/other holds several checkpoints"):
        checkpoints.resolve_source_model("hf://sb3/other")
    assert checkpoints.resolve_source_model("hf://sb3/other/b.zip").name == "b.zip"


def test_hf_without_the_hub_extra_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(MissingDependencyError) as err:
        checkpoints.resolve_source_model("hf://sb3/sac-Pendulum-v1")
    assert str(err.value) == ("--source-model hf://sb3/sac-Pendulum-v1 needs huggingface_hub: "
                              "pip install rltransfer[hub]")
