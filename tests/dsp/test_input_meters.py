"""The engine's pre-fader input meters (gain staging) against numpy on the same samples."""

import numpy as np

from studiod.dsp.engine import INPUT_CLIP_DBFS, Engine
from tests.dsp.test_engine import FS, SESSION, inputs, noise, settle


def test_input_meters_are_before_trim_and_fader_and_count_every_sample():
    engine = Engine(SESSION, max_block_frames=FS)
    for address, value in {"/ch/1/trim": 12.0, "/ch/1/fader": -20.0, "/ch/3/mute": 1}.items():
        engine.set(address, value)
    settle(engine)
    before, samples_before = engine.input_meters()
    t = np.arange(FS) / FS
    kick = (10 ** (-15 / 20) * np.sin(2 * np.pi * 997.0 * t)).astype(np.float32)
    kick[1000:1010] = 1.0  # ten samples at full scale: clips
    kick[2000:2005] = 10 ** (-0.05 / 20)  # within 0.1 dB of full scale: clips too
    kick[3000:3005] = 10 ** (-0.2 / 20)  # 0.2 dB below: not a clip
    left, right = noise(FS, 1, 0.05), noise(FS, 2, 0.2)
    x = inputs(FS, i1=kick, i3=left, i4=right)
    engine.render(x, 64)
    after, samples = engine.input_meters()
    assert samples - samples_before == FS
    mean_sq = (after[:, 1] - before[:, 1]) / FS
    np.testing.assert_allclose(mean_sq[0], np.mean(kick.astype(np.float64) ** 2), rtol=1e-9)
    # a stereo strip: the mean of its lanes' mean squares (the mute is after the meter)
    expected = (np.mean(left.astype(np.float64) ** 2) + np.mean(right.astype(np.float64) ** 2)) / 2
    np.testing.assert_allclose(mean_sq[2], expected, rtol=1e-9)
    clip = 10 ** (INPUT_CLIP_DBFS / 20)
    assert after[0, 2] - before[0, 2] == np.count_nonzero(np.abs(kick) >= clip) == 15
    assert after[2, 2] == 0 and after[1, 2] == 0
    # the peak is the last block's (64 frames), the louder lane of a stereo strip
    last = slice(FS - 64, FS)
    assert after[0, 0] == np.max(np.abs(kick[last]))
    assert after[2, 0] == max(np.max(np.abs(left[last])), np.max(np.abs(right[last])))
