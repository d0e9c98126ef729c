"""PixelCatch: a tiny, fast pixel task with physical and visual parameters.

A ball falls from the top of a 48x48 RGB frame; the agent moves a paddle along the bottom
to catch it. Frames are drawn with numpy (no pygame), tens of thousands of steps per second,
so pixel transfer studies (physical or visual target changes) run in minutes on a CPU.
"""

from __future__ import annotations

import colorsys

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from .family import ATTRIBUTE, MAKE_KWARG, Family, Parameter, add_family

SIZE = 48  # frame height and width in pixels (NatureCNN's 8/4, 4/2, 3/1 convs fit from 36)
PADDLE_HEIGHT = 3
PADDLE_TOP = SIZE - PADDLE_HEIGHT - 1  # the ball is caught or missed when it reaches this row
DISTRACTOR_SPEED = 1.5  # px/step


def _rgb(hue: float, value: float = 1.0) -> np.ndarray:
    return (np.array(colorsys.hsv_to_rgb(hue % 1.0, 1.0, value)) * 255).round().astype(np.uint8)


class PixelCatchEnv(gym.Env[np.ndarray, np.int64]):
    """Catch the falling ball with the paddle; one ball per episode.

    Observation: the frame, ``Box(0, 255, (48, 48, 3), uint8)`` (height, width, RGB).
    Actions: ``Discrete(3)``: 0 stay, 1 left, 2 right.
    Reward: +1 when the ball reaches the paddle's row over the paddle, -1 when it does not;
    the episode then ends (about 20 steps at the default speed). A random policy scores
    about -0.3 on average; catching every ball scores 1.

    ==============  =======  ===========  ==========  ==========================================
    parameter       default  range        unit        meaning
    ==============  =======  ===========  ==========  ==========================================
    ball_speed      2        [0.5, 6]     px/step     how fast the ball falls (physical)
    ball_drift      0        [0, 3]       px/step     largest sideways speed of the ball, drawn
                                                      at each reset; it bounces off the walls
                                                      (physical)
    paddle_speed    3        [0.5, 8]     px/step     how far one action moves the paddle
                                                      (physical)
    paddle_width    12       [4, 32]      px          paddle width (physical and visual)
    ball_size       4        [2, 8]       px          ball side (physical and visual)
    ball_hue        0        [0, 1]       -           ball colour, HSV hue: 0 red, 0.33 green,
                                                      0.67 blue (visual)
    background      0        [0, 0.8]     -           background grey level, 0 black (visual)
    distractors     0        0-4          -           moving squares in the ball's complementary
                                                      colour that do not matter (visual)
    ==============  =======  ===========  ==========  ==========================================
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}

    def __init__(self, render_mode: str | None = None, ball_speed: float = 2.0,
                 ball_drift: float = 0.0, paddle_speed: float = 3.0, paddle_width: int = 12,
                 ball_size: int = 4, ball_hue: float = 0.0, background: float = 0.0,
                 distractors: int = 0):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.render_mode = render_mode
        self.ball_speed = float(ball_speed)
        self.ball_drift = float(ball_drift)
        self.paddle_speed = float(paddle_speed)
        self.paddle_width = int(paddle_width)
        self.ball_size = int(ball_size)
        self.ball_hue = float(ball_hue)
        self.background = float(background)
        self.distractors = int(distractors)
        self.observation_space = spaces.Box(0, 255, (SIZE, SIZE, 3), np.uint8)
        self.action_space = spaces.Discrete(3)
        self._ball_colour = _rgb(self.ball_hue)
        self._distractor_colour = _rgb(self.ball_hue + 0.5)
        self._background_colour = np.full(3, round(self.background * 255), np.uint8)
        self._ball = np.zeros(2)  # x, y of the top-left corner
        self._ball_vx = 0.0
        self._paddle_x = 0.0
        self._distractor_pos = np.zeros((self.distractors, 2))
        self._distractor_vx = np.zeros(self.distractors)
        self._frame = np.zeros((SIZE, SIZE, 3), np.uint8)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        rng = self.np_random
        self._paddle_x = (SIZE - self.paddle_width) / 2
        self._ball = np.array([rng.uniform(0, SIZE - self.ball_size), 0.0])
        self._ball_vx = rng.uniform(-self.ball_drift, self.ball_drift)
        self._distractor_pos = np.column_stack([
            rng.uniform(0, SIZE - self.ball_size, self.distractors),
            rng.uniform(0, PADDLE_TOP - 2 * self.ball_size, self.distractors),
        ])
        self._distractor_vx = rng.choice([-DISTRACTOR_SPEED, DISTRACTOR_SPEED], self.distractors)
        return self._draw(), {}

    def step(self, action):
        move = (0.0, -self.paddle_speed, self.paddle_speed)[int(action)]
        self._paddle_x = min(max(self._paddle_x + move, 0.0), SIZE - self.paddle_width)
        self._ball[1] += self.ball_speed
        self._ball[0], self._ball_vx = _bounce(self._ball[0] + self._ball_vx, self._ball_vx,
                                               SIZE - self.ball_size)
        for i in range(self.distractors):
            self._distractor_pos[i, 0], self._distractor_vx[i] = _bounce(
                self._distractor_pos[i, 0] + self._distractor_vx[i], self._distractor_vx[i],
                SIZE - self.ball_size)
        reward, terminated = 0.0, False
        if self._ball[1] + self.ball_size >= PADDLE_TOP:
            self._ball[1] = PADDLE_TOP - self.ball_size
            terminated = True
            left, right = self._ball[0], self._ball[0] + self.ball_size
            caught = right > self._paddle_x and left < self._paddle_x + self.paddle_width
            reward = 1.0 if caught else -1.0
        return self._draw(), reward, terminated, False, {}

    def render(self) -> np.ndarray | None:
        if self.render_mode == "rgb_array":
            return self._frame.copy()
        return None

    def _draw(self) -> np.ndarray:
        frame = np.empty((SIZE, SIZE, 3), np.uint8)
        frame[:] = self._background_colour
        s = self.ball_size
        for x, y in self._distractor_pos:
            frame[int(y):int(y) + s, int(x):int(x) + s] = self._distractor_colour
        x, y = int(round(self._ball[0])), int(round(self._ball[1]))
        frame[y:y + s, x:x + s] = self._ball_colour
        px = int(round(self._paddle_x))
        frame[PADDLE_TOP:PADDLE_TOP + PADDLE_HEIGHT, px:px + self.paddle_width] = 255
        self._frame = frame
        return frame


def _bounce(x: float, vx: float, high: float) -> tuple[float, float]:
    """Reflect a position that left [0, high] back inside, reversing its velocity."""
    if x < 0:
        return -x, -vx
    if x > high:
        return 2 * high - x, -vx
    return x, vx


if "rltransfer/PixelCatch-v0" not in gym.registry:
    gym.register(
    id="rltransfer/PixelCatch-v0",
    entry_point="rltransfer.envs.pixel_catch:PixelCatchEnv",
    max_episode_steps=200,
    reward_threshold=0.8,  # catches 90% of the balls
    )


def _param(name, default, low, high, unit, doc, value_type=float, choices=()):
    # Float values are attributes the env reads at every reset and step (colours through
    # _derive), so they can also be randomized per episode; the sizes and the distractor count
    # shape the env's arrays when it is built.
    via = ATTRIBUTE if value_type is float else MAKE_KWARG
    return Parameter(name, default, low, high, unit, doc, via=via, value_type=value_type,
                     choices=choices)


def _derive(env: PixelCatchEnv, params) -> None:
    env._ball_colour = _rgb(env.ball_hue)
    env._distractor_colour = _rgb(env.ball_hue + 0.5)
    env._background_colour = np.full(3, round(env.background * 255), np.uint8)


PIXEL_CATCH = add_family(Family(
    name="PixelCatch",
    env_ids=("rltransfer/PixelCatch-v0",),
    entry_point="rltransfer.envs.pixel_catch:PixelCatchEnv",
    doc="Catch a falling ball with a paddle, from 48x48 RGB frames (tiny and fast).",
    parameters=(
        _param("ball_speed", 2.0, 0.5, 6.0, "px/step", "how fast the ball falls"),
        _param("ball_drift", 0.0, 0.0, 3.0, "px/step",
               "largest sideways speed of the ball (it bounces off the walls)"),
        _param("paddle_speed", 3.0, 0.5, 8.0, "px/step", "how far one action moves the paddle"),
        _param("paddle_width", 12, 4, 32, "px", "paddle width", int),
        _param("ball_size", 4, 2, 8, "px", "side of the (square) ball", int),
        _param("ball_hue", 0.0, 0.0, 1.0, "-", "ball colour as an HSV hue (0 red, 0.67 blue)"),
        _param("background", 0.0, 0.0, 0.8, "-", "background grey level (0 black)"),
        _param("distractors", 0, 0, 4, "-",
               "moving squares in the ball's complementary colour that do not matter", int),
    ),
    derive=_derive,
    variants={
        "BlueBall": {"ball_hue": 0.67},
        "GreyBackground": {"background": 0.5},
        "Distractors": {"distractors": 2},
        "FastBall": {"ball_speed": 3.0},
        "Drift": {"ball_drift": 1.5},
        "NarrowPaddle": {"paddle_width": 8},
    },
))
