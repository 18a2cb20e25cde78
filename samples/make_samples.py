"""Make the sample clips in samples/ deterministically (same bytes on every run with the same PyAV).

    python samples/make_samples.py            # writes samples/coffee_pan.mp4, samples/testsrc2.mp4

coffee_pan.mp4: a real photograph (scikit-image's ``coffee``, CC0) under a slow sub-pixel pan and
zoom, 480x320, 25 fps, 2 s, H.264 crf 18, with a 48 kHz stereo AAC track (a two-tone chord).
Sub-pixel motion makes every frame a fresh resampling of the photo, so a codec cannot just copy
blocks: it is the case a video VAE has to get right.
testsrc2.mp4: FFmpeg's synthetic test pattern (sharp edges, moving parts, a counter), 320x240,
25 fps, 2 s, no audio: tile seams and temporal glitches show up clearly on it.

The clips are written with PyAV directly rather than with vaecodec.video, so tests that read
them do not depend on the writer under test.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import ColorRange, Colorspace, Interpolation
from skimage import data
from skimage.transform import AffineTransform, warp

HERE = Path(__file__).resolve().parent
FPS = 25
SECONDS = 2
SAMPLE_RATE = 48000
# swscale's default RGB->YUV path is biased; accurate rounding + full chroma is not.
SWS = Interpolation.BILINEAR | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT | Interpolation.FULL_CHR_H_INP


def pan_zoom_frames(width: int = 480, height: int = 320) -> np.ndarray:
    """uint8 [T, H, W, 3]: the coffee photo (600x400) seen through a drifting, slowly zooming window."""
    photo = data.coffee().astype(np.float64) / 255  # [400, 600, 3]
    n = FPS * SECONDS
    frames = np.empty((n, height, width, 3), np.uint8)
    for t in range(n):
        zoom = 1.10 + 0.12 * t / (n - 1)  # output px per photo px grows 0.88 -> 1.0 (window shrinks)
        scale = zoom * width / photo.shape[1]
        # Window centre drifts 0.37 px/frame right and 0.23 px/frame down: never a whole pixel.
        cx, cy = 280 + 0.37 * t, 190 + 0.23 * t
        # Map output (col, row) -> photo (col, row): photo = centre + (out - out_centre) / scale.
        out_to_photo = AffineTransform(scale=1 / scale, translation=(cx - width / 2 / scale, cy - height / 2 / scale))
        frame = warp(photo, out_to_photo, output_shape=(height, width), order=3, mode="edge")
        frames[t] = np.clip(np.rint(frame * 255), 0, 255).astype(np.uint8)
    return frames


def chord(seconds: float = SECONDS) -> np.ndarray:
    """float32 [2, samples]: 220 Hz + 330 Hz, fading in and out, channels in different phase."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    envelope = np.sin(np.pi * t / seconds) ** 0.5
    left = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * 330 * t)
    right = 0.3 * np.sin(2 * np.pi * 220 * t + 1.0) + 0.2 * np.sin(2 * np.pi * 330 * t + 2.0)
    return (np.stack([left, right]) * envelope).astype(np.float32)


def write_clip(path: Path, frames: np.ndarray, audio: np.ndarray | None = None) -> None:
    """H.264 crf 18 (BT.709, limited range) + optional AAC, fast-start mp4."""
    with av.open(str(path), "w", options={"movflags": "+faststart"}) as out:
        vs = out.add_stream("libx264", rate=Fraction(FPS), options={"crf": "18", "preset": "medium"})
        vs.width, vs.height, vs.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        cc = vs.codec_context
        cc.colorspace, cc.color_primaries, cc.color_trc, cc.color_range = 1, 1, 1, 1
        if audio is not None:
            aus = out.add_stream("aac", rate=SAMPLE_RATE, layout="stereo")
            aus.bit_rate = 96000
            frame_len = 1024  # AAC frame size
            for i in range(0, audio.shape[1], frame_len):
                block = np.ascontiguousarray(audio[:, i : i + frame_len])
                af = av.AudioFrame.from_ndarray(block, format="fltp", layout="stereo")
                af.sample_rate, af.pts = SAMPLE_RATE, i
                out.mux(aus.encode(af))
            out.mux(aus.encode(None))
        for t, rgb in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
                format="yuv420p", dst_colorspace=Colorspace.ITU709, dst_color_range=ColorRange.MPEG, interpolation=SWS
            )
            vf.pts = t
            out.mux(vs.encode(vf))
        out.mux(vs.encode(None))


def testsrc2_frames(width: int = 320, height: int = 240) -> np.ndarray:
    with av.open(f"testsrc2=size={width}x{height}:rate={FPS}:duration={SECONDS}", format="lavfi") as src:
        return np.stack([f.to_ndarray(format="rgb24") for f in src.decode(video=0)])


def main() -> None:
    write_clip(HERE / "coffee_pan.mp4", pan_zoom_frames(), chord())
    write_clip(HERE / "testsrc2.mp4", testsrc2_frames())
    for name in ("coffee_pan.mp4", "testsrc2.mp4"):
        print(f"{name}: {(HERE / name).stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
