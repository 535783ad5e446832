"""Videos: encoders decode back, triggers pick exactly the episodes and steps gymnasium's save_video does, record()."""
import os

import imageio.v3 as iio
import jax
import numpy as np
import pytest

from megastep_jax import plotting, recording, spaces


def grey_frames(n, h=32, w=48):
    """Frame i is uniformly grey at level 20*i, so a decoded frame says which it was."""
    return [np.full((h, w, 3), 20 * i, np.uint8) for i in range(n)]


def decode(path):
    """All frames of a video file; mp4 through PyAV, in this process (the ffmpeg plugin forks)."""
    return iio.imread(path, plugin="pyav") if str(path).endswith(".mp4") else iio.imread(path)


def levels(path):
    """The grey level of each decoded frame, as the index of the frame it came from."""
    video = decode(path)
    return np.round(video[:, :, :, 0].mean((1, 2)) / 20).astype(int).tolist()


def test_capped_cubic_schedule_is_cubes_then_thousands():
    picked = [i for i in range(3001) if recording.capped_cubic_video_schedule(i)]
    assert picked == [0, 1, 8, 27, 64, 125, 216, 343, 512, 729, 1000, 2000, 3000]


def test_episode_trigger_writes_the_first_video_length_frames(tmp_path):
    paths = recording.save_video(grey_frames(10), str(tmp_path), episode_trigger=lambda e: e == 3,
                                 video_length=4, episode_index=3, name_prefix="clip", fps=5)
    assert paths == [str(tmp_path / "clip-episode-3.mp4")]
    assert levels(paths[0]) == [0, 1, 2, 3]
    assert recording.save_video(grey_frames(3), str(tmp_path), episode_trigger=lambda e: e == 3,
                                episode_index=4) == []


def test_default_trigger_is_capped_cubic(tmp_path):
    written = {e: recording.save_video(grey_frames(2), str(tmp_path), episode_index=e) for e in (8, 9, 1000)}
    assert [len(written[e]) for e in (8, 9, 1000)] == [1, 0, 1]
    assert os.path.basename(written[1000][0]) == "rl-video-episode-1000.mp4"


def test_step_trigger_skips_the_reset_frame_and_offsets_steps(tmp_path):
    # frames[0] is the reset; frames[i] is step step_starting_index + i - 1
    frames = grey_frames(9)
    paths = recording.save_video(frames, str(tmp_path), step_trigger=lambda s: s % 5 == 0, video_length=3,
                                 step_starting_index=12)
    # steps 12..19 sit at frames 1..8; steps 15 (frame 4) and 20 (past the end)
    assert [os.path.basename(p) for p in paths] == ["rl-video-step-15.mp4"]
    assert levels(paths[0]) == [4, 5, 6]
    # without video_length a clip runs to the end of the episode
    paths = recording.save_video(frames, str(tmp_path / "b"), step_trigger=lambda s: s in (0, 6))
    assert [os.path.basename(p) for p in paths] == ["rl-video-step-0.mp4", "rl-video-step-6.mp4"]
    assert levels(paths[0]) == [1, 2, 3, 4, 5, 6, 7, 8] and levels(paths[1]) == [7, 8]


def test_both_triggers_and_gif(tmp_path):
    paths = recording.save_video(grey_frames(5), str(tmp_path), episode_trigger=lambda e: True,
                                 step_trigger=lambda s: s == 1, format="gif", fps=4)
    assert [os.path.basename(p) for p in paths] == ["rl-video-episode-0.gif", "rl-video-step-1.gif"]
    assert levels(paths[0]) == [0, 1, 2, 3, 4] and levels(paths[1]) == [2, 3, 4]
    with pytest.raises(ValueError, match="video_length"):
        recording.save_video(grey_frames(2), str(tmp_path), video_length=0)


def test_encoder_sizes_and_errors(tmp_path):
    with recording.Encoder(fps=10) as enc:
        for f in grey_frames(3, h=31, w=45):   # odd: padded to even for H.264
            enc(f)
    video = decode(enc.save(str(tmp_path / "odd.mp4")))
    assert video.shape == (3, 32, 46, 3)
    fig = plotting.figure(figsize=(2, 1), dpi=50)
    with recording.Encoder(format="gif") as enc:
        enc(fig)
        enc(np.zeros((50, 100)))
    assert iio.imread(enc.value, extension=".gif").shape == (2, 50, 100, 3)
    enc = recording.Encoder()
    enc(np.zeros((4, 4, 3)))
    with pytest.raises(ValueError, match="frame"):
        enc(np.zeros((6, 4, 3)))
    with pytest.raises(ValueError, match="format"):
        recording.Encoder(format="avi")
    with pytest.raises(ValueError, match="fps"):
        recording.Encoder(fps=0)


def grey(i):
    """Module level, so worker processes can unpickle it."""
    return np.full((16, 16, 3), 20 * i, np.uint8)


def test_parallel_encoder_keeps_call_order(tmp_path):
    with recording.ParallelEncoder(grey, fps=5, N=2, max_pending=3) as enc:
        for i in range(8):
            enc(i)
    assert levels(enc.save(str(tmp_path / "p.mp4"))) == list(range(8))


def test_record_explorer_video_decodes_to_every_step(tmp_path):
    from megastep_jax.envs.explorer import Explorer

    env = Explorer(res=32, subsample=4, n_geometries=1)
    aspace = env.action_space(env.default_params)
    path = recording.record(env, None, lambda key, obs: spaces.sample(aspace, key), jax.random.PRNGKey(0),
                            length=5, path=str(tmp_path / "explorer.mp4"), N=1, progress=False)
    video = decode(path)
    assert video.shape == (6, 600, 1200, 3)   # reset + 5 steps, plot_state's 12 x 6 inches at 100 dpi
    assert video[0].std() > 10 and not np.array_equal(video[0], video[-1])


def first_person(obs):
    """Module level plot_fn: the strips of the first agent as a picture."""
    from megastep_jax.vecenv import strip_image

    return strip_image({k: v[0] for k, v in obs.items()}, band_height=4)


def test_record_with_custom_state_and_plot_functions(tmp_path):
    try:
        from test_vecenv import TOY1
    except ImportError:
        from tests.test_vecenv import TOY1

    policy = lambda key, obs: spaces.sample(TOY1.action_space(None), key)
    with pytest.raises(ValueError, match="state_fn"):
        recording.record(TOY1, None, policy, jax.random.PRNGKey(0), 3, path=str(tmp_path / "x.gif"))
    path = recording.record(TOY1, None, policy, jax.random.PRNGKey(0), 3, path=str(tmp_path / "toy.mp4"),
                            state_fn=lambda state, obs: obs, plot_fn=first_person, N=1, progress=False)
    assert decode(path).shape == (4, 4, 8, 3)   # reset + 3 steps; rgb band 4 px tall, 8 wide
    with pytest.raises(ValueError, match="path"):
        recording.record(TOY1, None, policy, jax.random.PRNGKey(0), 3, path=str(tmp_path / "toy.avi"))


def test_writing_an_mp4_forks_nothing_and_warns_nothing(tmp_path):
    import warnings

    import jax.numpy as jnp

    jnp.zeros(3).block_until_ready()   # JAX's threads are running, as in any real run
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # os.fork() in a threaded process warns: that would fail here
        path = recording.save_video(grey_frames(4), str(tmp_path), episode_trigger=lambda e: True, fps=5)[0]
        assert levels(path) == [0, 1, 2, 3]
