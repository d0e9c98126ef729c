"""Pixel families: parameters as constructor arguments, preprocessing, variants, errors."""

from __future__ import annotations

import re
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.atari_wrappers import AtariWrapper
from stable_baselines3.common.env_util import is_wrapped
from stable_baselines3.common.monitor import Monitor

from rltransfer import envs as catalog
from rltransfer.env_factory import make_env, reward_threshold
from rltransfer.errors import MissingDependencyError, ParameterError
from rltransfer.specs import EnvSpec

NEW_FAMILIES = {"PixelCatch", "CarRacing", "DoorKey", "Pong", "Breakout", "SpaceInvaders",
                "Freeway", "Atari"}


def _spec(text: str) -> EnvSpec:
    return EnvSpec.parse(text)


def _rollout(env: gym.Env, actions, seed: int = 0) -> list:
    obs, _ = env.reset(seed=seed)
    frames, rewards = [obs], []
    for action in actions:
        obs, reward, terminated, truncated, _ = env.step(action)
        frames.append(obs)
        rewards.append(reward)
        if terminated or truncated:
            break
    return [frames, rewards]


# ------------------------------------------------------------------------- Parameter / Family


def test_parameter_types_convert_and_check_values():
    make = catalog.MAKE_KWARG
    switch = catalog.Parameter("on", 0, 0, 1, "-", "a switch", via=make, value_type=bool)
    count = catalog.Parameter("n", 2, 0, 4, "-", "a count", via=make, value_type=int)
    picked = catalog.Parameter("size", 5, 5, 16, "cells", "a size", value_type=int,
                       choices=(5.0, 6.0, 8.0, 16.0))
    assert switch.convert(1.0) is True and switch.convert(0.0) is False
    assert count.convert(3.0) == 3 and isinstance(count.convert(3.0), int)
    assert switch.check(1.0) is None and count.check(4.0) is None and picked.check(8.0) is None
    assert "give 0 (off) or 1 (on)" in switch.check(0.5)
    assert "whole number" in count.check(1.5)
    assert "outside its valid range [0, 4]" in count.check(5.0)
    assert "not one of the valid values (5, 6, 8, 16)" in picked.check(7.0)


def test_new_families_are_in_the_catalog_with_documented_parameters():
    found = catalog.families()
    assert NEW_FAMILIES <= set(found)
    for name in NEW_FAMILIES:
        for parameter in found[name].parameters:
            assert parameter.doc and parameter.low <= parameter.default <= parameter.high
            assert parameter.check(parameter.default) is None, (name, parameter.name)


def test_attribute_setter_refuses_constructor_parameters():
    family = catalog.get_family("PixelCatch")
    env = gym.make("rltransfer/PixelCatch-v0")
    with pytest.raises(KeyError, match="make the env with it"):
        family.apply(env, {"paddle_width": 8})


def test_catalog_imports_and_lists_families_without_the_optional_packages():
    code = ("import sys\n"
            "for name in ('ale_py', 'minigrid', 'Box2D'): sys.modules[name] = None\n"
            "from rltransfer import envs\n"
            "print(sorted(envs.families()))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert all(name in result.stdout for name in NEW_FAMILIES)


@pytest.mark.parametrize("module,spec,extra", [
    ("ale_py", "ALE/Pong-v5", "atari"),
    ("ale_py", "rltransfer/Pong-Mode1-v0", "atari"),
    ("minigrid", "MiniGrid-DoorKey-5x5-v0", "minigrid"),
    ("Box2D", "rltransfer/CarRacing-DomainRandomized-v0", "box2d"),
])
def test_missing_package_is_a_one_line_install_hint(monkeypatch, module, spec, extra):
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now fails
    hint = f"pip install 'rltransfer[{extra}]'"
    with pytest.raises(MissingDependencyError, match=re.escape(hint)) as caught:
        make_env(_spec(spec))
    assert "\n" not in str(caught.value)
    if spec.startswith("rltransfer/"):  # a registered variant asks for it too
        with pytest.raises(MissingDependencyError, match=re.escape(hint)):
            gym.make(spec)


# ---------------------------------------------------------------------------------- PixelCatch


def test_pixel_catch_frames_are_small_rgb_and_deterministic_under_a_seed():
    env = make_env(_spec("rltransfer/PixelCatch-v0"), render_mode="rgb_array")
    assert env.observation_space.shape == (48, 48, 3)
    assert env.observation_space.dtype == np.uint8
    assert env.action_space == gym.spaces.Discrete(3)
    actions = [1, 2, 2, 0, 1] * 10
    frames, rewards = _rollout(env, actions, seed=7)
    assert frames[0].shape == (48, 48, 3) and frames[0].dtype == np.uint8
    np.testing.assert_array_equal(env.render(), frames[-1])
    again, rewards_again = _rollout(make_env(_spec("rltransfer/PixelCatch-v0")), actions, seed=7)
    for a, b in zip(frames, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert rewards == rewards_again and rewards[-1] in (-1.0, 1.0)
    other, _ = _rollout(make_env(_spec("rltransfer/PixelCatch-v0")), actions, seed=8)
    assert not np.array_equal(frames[0], other[0])  # the seed places the ball


def _track(env: gym.Env, follow: bool) -> float:
    """Move the paddle under the ball (or away from it) until the episode ends."""
    env.reset(seed=3)
    catch = env.unwrapped
    while True:
        centre = catch._paddle_x + catch.paddle_width / 2
        ball = catch._ball[0] + catch.ball_size / 2
        toward = 1 if ball < centre else 2
        action = toward if follow and abs(ball - centre) > 1 else (0 if follow else 3 - toward)
        _, reward, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            return reward


def test_pixel_catch_rewards_a_catch_and_punishes_a_miss():
    env = make_env(_spec("rltransfer/PixelCatch-v0"))
    assert _track(env, follow=True) == 1.0
    assert _track(env, follow=False) == -1.0


@pytest.mark.parametrize("name,value", [("ball_speed", 4.0), ("paddle_speed", 6.0),
                                        ("ball_drift", 2.0), ("paddle_width", 20.0)])
def test_pixel_catch_physical_parameters_change_the_next_state(name, value):
    def state_after(spec: EnvSpec):
        env = make_env(spec)
        env.reset(seed=0)
        env.step(2)
        catch = env.unwrapped
        return np.array([*catch._ball, catch._paddle_x, catch._paddle_x + catch.paddle_width])

    default = state_after(EnvSpec("rltransfer/PixelCatch-v0"))
    varied = state_after(EnvSpec("rltransfer/PixelCatch-v0", {name: value}))
    assert not np.allclose(default, varied)
    np.testing.assert_array_equal(varied, state_after(EnvSpec("rltransfer/PixelCatch-v0",
                                                              {name: value})))


@pytest.mark.parametrize("name,value", [("ball_hue", 0.67), ("background", 0.5),
                                        ("distractors", 2.0)])
def test_pixel_catch_visual_parameters_change_pixels_not_dynamics(name, value):
    actions = [2, 2, 1, 0] * 10
    default = make_env(EnvSpec("rltransfer/PixelCatch-v0"))
    varied = make_env(EnvSpec("rltransfer/PixelCatch-v0", {name: value}))
    frames, rewards = _rollout(default, actions)
    varied_frames, varied_rewards = _rollout(varied, actions)
    assert rewards == varied_rewards
    np.testing.assert_array_equal(default.unwrapped._ball, varied.unwrapped._ball)
    assert default.unwrapped._paddle_x == varied.unwrapped._paddle_x
    assert not np.array_equal(frames[0], varied_frames[0])


@pytest.mark.parametrize("variant", list(catalog.get_family("PixelCatch").variants))
def test_pixel_catch_variants_rebuild_from_their_spec(variant):
    family = catalog.get_family("PixelCatch")
    env = gym.make(family.variant_id(variant))
    rebuilt = gym.make(env.spec)
    for name, value in family.variants[variant].items():
        assert getattr(env.unwrapped, name) == pytest.approx(value)
        assert getattr(rebuilt.unwrapped, name) == pytest.approx(value)
    np.testing.assert_array_equal(env.reset(seed=1)[0], rebuilt.reset(seed=1)[0])
    assert env.spec.reward_threshold == 0.8


def test_pixel_catch_has_a_default_reward_threshold():
    assert reward_threshold(_spec("rltransfer/PixelCatch-v0:ball_hue=0.5")) == 0.8
    assert reward_threshold(_spec("rltransfer/PixelCatch-BlueBall-v0")) == 0.8


@pytest.mark.parametrize("text,message", [
    ("rltransfer/PixelCatch-v0:distractors=1.5", "distractors=1.5 must be a whole number"),
    ("rltransfer/PixelCatch-v0:ball_speed=10", "ball_speed=10 is outside its valid range"),
    ("rltransfer/PixelCatch-v0:colour=1", "Valid parameters: ball_speed"),
])
def test_pixel_catch_invalid_values_are_one_line_errors(text, message):
    with pytest.raises(ParameterError, match=re.escape(message)) as caught:
        make_env(_spec(text))
    assert "\n" not in str(caught.value)


# ----------------------------------------------------------------------------------- CarRacing


def test_car_racing_parameters_are_constructor_arguments():
    env = make_env(_spec("CarRacing-v3:lap_complete_percent=0.5,continuous=0"))
    assert env.observation_space.shape == (96, 96, 3)
    assert env.observation_space.dtype == np.uint8
    assert env.action_space == gym.spaces.Discrete(5)
    assert env.unwrapped.lap_complete_percent == 0.5
    assert env.unwrapped.continuous is False and env.unwrapped.domain_randomize is False
    obs, _ = env.reset(seed=0)
    obs, *_ = env.step(3)  # gas
    assert obs.shape == (96, 96, 3) and obs.dtype == np.uint8
    assert gym.make(env.spec).unwrapped.lap_complete_percent == 0.5


def test_car_racing_domain_randomize_changes_colours_across_resets():
    default = make_env(_spec("CarRacing-v3"))
    default.reset(seed=0)
    np.testing.assert_array_equal(default.unwrapped.road_color, [102, 102, 102])
    env = gym.make("rltransfer/CarRacing-DomainRandomized-v0")
    assert env.spec.max_episode_steps == 1000 and env.spec.reward_threshold == 900
    env.reset(seed=0)
    first = env.unwrapped.road_color.copy()
    env.reset()
    assert not np.allclose(first, env.unwrapped.road_color)
    assert not np.allclose(first, [102, 102, 102])
    assert gym.make(env.spec).unwrapped.domain_randomize is True


def test_car_racing_switch_takes_zero_or_one():
    with pytest.raises(ParameterError, match=re.escape("domain_randomize=0.5 is a switch")):
        make_env(_spec("CarRacing-v3:domain_randomize=0.5"))


# ---------------------------------------------------------------------------------------- ALE


def _ram(spec: str) -> np.ndarray:
    env = make_env(_spec(spec))
    env.reset(seed=0)
    for _ in range(10):
        env.step(0)
    return env.unwrapped.ale.getRAM().copy()


def test_atari_preprocessing_and_v5_protocol():
    env = make_env(_spec("ALE/Breakout-v5"))
    assert is_wrapped(env, AtariWrapper)
    assert env.observation_space.shape == (84, 84, 1)
    assert env.observation_space.dtype == np.uint8
    assert env.unwrapped._frameskip == 1  # AtariWrapper skips 4 frames with max-pooling
    assert env.unwrapped.ale.getFloat("repeat_action_probability") == pytest.approx(0.25)
    obs, _ = env.reset(seed=0)
    obs, reward, *_ = env.step(1)
    assert obs.shape == (84, 84, 1) and reward in (-1.0, 0.0, 1.0)


@pytest.mark.parametrize("spec,mode,difficulty", [
    ("ALE/Breakout-v5:mode=4,difficulty=1", 4, 1),
    ("ALE/Pong-v5:mode=1", 1, None),
    ("ALE/Pong-v5:difficulty=2", None, 2),
])
def test_atari_mode_and_difficulty_reach_the_emulator(spec, mode, difficulty):
    env = make_env(_spec(spec))
    assert (env.unwrapped._game_mode, env.unwrapped._game_difficulty) == (mode, difficulty)
    base = spec.partition(":")[0]
    assert not np.array_equal(_ram(spec), _ram(base))  # the game's state differs


@pytest.mark.parametrize("family", [catalog.get_family(n) for n in
                                    ("Pong", "Breakout", "SpaceInvaders", "Freeway")],
                         ids=lambda f: f.name)
def test_atari_game_families_list_the_emulators_modes_and_difficulties(family):
    valid = catalog.atari.available(family.base_id)
    for name in ("mode", "difficulty"):
        assert [int(c) for c in family.parameter(name).choices] == valid[name]


def test_atari_ids_resolve_to_their_game_or_the_generic_family():
    assert catalog.family_of("ALE/Pong-v5")[0].name == "Pong"
    assert catalog.family_of("ALE/Seaquest-v5")[0].name == "Atari"
    assert catalog.family_of("rltransfer/Breakout-Mode4-v0")[0].name == "Breakout"


@pytest.mark.parametrize("text,message", [
    ("ALE/Pong-v5:mode=2", "mode=2 is not one of the valid values (0, 1)"),
    ("ALE/Seaquest-v5:mode=3", "mode=3 is not available in ALE/Seaquest-v5: valid modes are 0"),
    ("ALE/Seaquest-v5:difficulty=5",
     "difficulty=5 is not available in ALE/Seaquest-v5: valid difficulties are 0, 1"),
])
def test_atari_unavailable_modes_list_the_valid_ones(text, message):
    with pytest.raises(ParameterError, match=re.escape(message)) as caught:
        make_env(_spec(text))
    assert "\n" not in str(caught.value)


def test_atari_variant_rebuilds_from_its_spec():
    env = gym.make("rltransfer/Pong-Mode1-v0")
    assert is_wrapped(env, AtariWrapper) and env.observation_space.shape == (84, 84, 1)
    rebuilt = gym.make(env.spec)
    assert rebuilt.unwrapped._game_mode == 1 and is_wrapped(rebuilt, AtariWrapper)
    assert make_env(_spec("rltransfer/Breakout-Mode4-v0")).unwrapped._game_mode == 4
    spec = make_env(_spec("ALE/SpaceInvaders-v5:difficulty=1")).spec
    assert gym.make(spec).unwrapped._game_difficulty == 1


def test_atari_inner_wrapper_sits_under_the_preprocessing():
    family = catalog.get_family("Breakout")
    env = family.make("ALE/Breakout-v5", {"mode": 4.0}, inner=Monitor)
    chain, layer = [], env
    while isinstance(layer, gym.Wrapper):
        chain.append(type(layer))
        layer = layer.env
    assert chain.index(AtariWrapper) < chain.index(Monitor)  # Monitor sees raw, whole games
    rebuilt = gym.make(env.spec)
    assert not is_wrapped(rebuilt, Monitor) and rebuilt.unwrapped._game_mode == 4


# ------------------------------------------------------------------------------------ MiniGrid


@pytest.mark.parametrize("text,size", [
    ("MiniGrid-DoorKey-5x5-v0", 5),
    ("MiniGrid-DoorKey-5x5-v0:size=8", 8),
    ("MiniGrid-DoorKey-16x16-v0", 16),
    ("rltransfer/DoorKey-6x6-v0", 6),
])
def test_doorkey_size_picks_the_grid_and_the_view_stays_56px(text, size):
    env = make_env(_spec(text))
    assert env.spec.id == f"MiniGrid-DoorKey-{size}x{size}-v0"
    view = 7 * catalog.doorkey.TILE_SIZE
    assert env.observation_space.shape == (view, view, 3)
    assert env.observation_space.dtype == np.uint8
    assert env.action_space == gym.spaces.Discrete(7)
    obs, _ = env.reset(seed=0)
    assert env.unwrapped.width == size
    obs, *_ = env.step(2)
    assert obs.shape == (56, 56, 3) and obs.dtype == np.uint8
    assert gym.make(env.spec).unwrapped.width == size


def test_doorkey_variant_rebuilds_from_its_spec():
    env = gym.make("rltransfer/DoorKey-8x8-v0")
    assert env.unwrapped.width == 8 and env.observation_space.shape == (56, 56, 3)
    assert gym.make(env.spec).unwrapped.width == 8


def test_doorkey_size_must_be_a_registered_one():
    with pytest.raises(ParameterError, match=re.escape("size=7 is not one of the valid values "
                                                       "(5, 6, 8, 16)")):
        make_env(_spec("MiniGrid-DoorKey-5x5-v0:size=7"))
