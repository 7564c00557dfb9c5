"""translate on video: same frames, timing and sound; upright; resumable by hand after Ctrl-C; honest about damage.

Every clip is made here with PyAV (a few frames at 64 px), never a stored binary.
"""

from __future__ import annotations

import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from cgdistill import paths
from cgdistill.errors import CgdistillError
from cgdistill.flicker import FlickerMeter
from cgdistill.forward import translate_batch
from cgdistill.metrics import psnr
from cgdistill.nets import ResnetGenerator
from cgdistill.video import Interrupted
from cgdistill.videoio import END, is_video_file
from cgdistill.weights import save_generator
from translating import translate_clip

av = pytest.importorskip("av")
CPU = torch.device("cpu")


def make_clip(
    path: Path,
    *,
    frames: int = 6,
    size: tuple[int, int] = (64, 48),
    audio: str | None = None,
    rotation: int | None = None,
    pts_ms: list[int] | None = None,
    container_format: str | None = None,
) -> Path:
    """A gradient with a soft magenta blob moving 8 px a frame (so every frame differs), H.264 at CRF 10."""
    width, height = size
    pts_ms = pts_ms or [40 * i for i in range(frames)]
    output = av.open(str(path), "w", format=container_format)
    stream = output.add_stream("libx264", rate=25)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)  # timestamps in ms, as given
    stream.options = {"crf": "10"}
    if rotation is not None:
        stream.set_display_rotation(rotation)
    sound = None
    if audio is not None:
        sound = output.add_stream(audio, rate=16000)
        sound.layout = "mono"
    yy, xx = np.mgrid[0:height, 0:width]
    for index, pts in enumerate(pts_ms[:frames]):
        image = np.stack([xx * 255 // width, yy * 255 // height, np.full_like(xx, 60)], -1).astype(np.float64)
        blob = np.exp(-((xx - 12 - 8 * index) ** 2 + (yy - height // 2) ** 2) / (2 * 6.0**2))[..., None]
        image = (image * (1 - blob) + np.array([250, 40, 200]) * blob).astype(np.uint8)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts, frame.time_base = pts, stream.time_base
        output.mux(stream.encode(frame))
    output.mux(stream.encode(None))
    if sound is not None:
        samples = (0.3 * np.sin(np.arange(16000 * (pts_ms[-1] + 40) // 1000) / 5)).astype(np.float32)[None]
        chunk = av.AudioFrame.from_ndarray(samples, format="flt" if audio != "pcm_s16le" else "flt", layout="mono")
        chunk.sample_rate, chunk.pts = 16000, 0
        output.mux(sound.encode(chunk))
        output.mux(sound.encode(None))
    output.close()
    return path


def decoded(path: Path) -> list:
    with av.open(str(path)) as container:
        return list(container.decode(video=0))


def audio_packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as container:
        return [bytes(p) for p in container.demux(audio=0) if p.size]


class Smooth(nn.Module):
    """A fixed colour-swapping blur: a model whose output, like a trained generator's, is smooth (codec-friendly)."""

    multiple = 4

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 5, padding=2, padding_mode="reflect")
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.bias.zero_()
            for out, src in ((0, 1), (1, 2), (2, 0)):
                self.conv.weight[out, src] = 1 / 25

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(1.5 * self.conv(x))


@pytest.fixture
def tiny() -> nn.Module:
    torch.manual_seed(0)
    return ResnetGenerator(blocks=1, ngf=8)


@pytest.fixture
def student(home: Path) -> Path:
    torch.manual_seed(0)
    path = paths.run_path("tiny-student") / "G.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_generator(ResnetGenerator(blocks=1, ngf=8), path, direction="A2B", dataset="toy", teacher="tiny-teacher")
    return path


def test_frames_match_translating_the_decoded_frames_as_images(tmp_path):
    # CRF 18 on this smooth clip costs 37.6-38.2 dB (4:2:0 chroma and quantisation); the same frames one
    # step out of order score 29-30 dB and a wrong colour matrix or orientation far less, so 35 dB
    # separates codec loss from a pipeline that hands the encoder the wrong pixels.
    clip = make_clip(tmp_path / "clip.mp4")
    model = Smooth()
    result = translate_clip(model, clip, tmp_path / "out")
    source = np.stack([f.to_ndarray(format="rgb24") for f in decoded(clip)])
    expected = translate_batch(model, torch.from_numpy(source), CPU).float() / 255
    written = [torch.from_numpy(f.to_ndarray(format="rgb24")).float() / 255 for f in decoded(result.output)]
    assert len(written) == len(expected)
    assert min(psnr(out, ref) for out, ref in zip(written, expected, strict=True)) >= 35.0


def test_variable_frame_rate_timestamps_are_kept(tiny, tmp_path):
    pts_ms = [0, 40, 140, 180, 400, 440]
    clip = make_clip(tmp_path / "vfr.mp4", pts_ms=pts_ms)
    result = translate_clip(tiny, clip, tmp_path / "out")
    times = [round(float(f.pts * f.time_base) * 1000) for f in decoded(result.output)]
    assert times == pts_ms == [round(float(f.pts * f.time_base) * 1000) for f in decoded(clip)]


def test_audio_packets_are_copied_unchanged(tiny, tmp_path):
    clip = make_clip(tmp_path / "talk.mp4", audio="aac")
    result = translate_clip(tiny, clip, tmp_path / "out")
    assert result.audio_streams == 1
    assert audio_packets(result.output) == audio_packets(clip)


def test_audio_mp4_cannot_hold_is_copied_into_matroska(tiny, tmp_path):
    clip = make_clip(tmp_path / "raw.mkv", audio="pcm_s16le", container_format="matroska")
    result = translate_clip(tiny, clip, tmp_path / "out")
    assert result.output.name == "raw_A2B.mkv"
    assert audio_packets(result.output) == audio_packets(clip)


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_rotation_metadata_turns_the_frames_upright(tmp_path, rotation):
    clip = make_clip(tmp_path / "phone.mp4", rotation=rotation)  # stored 64x48
    model = Smooth()
    result = translate_clip(model, clip, tmp_path / "out")
    frames = decoded(result.output)
    # The display matrix turns counter-clockwise by `rotation` degrees, as np.rot90 does.
    upright = np.rot90(decoded(clip)[0].to_ndarray(format="rgb24"), rotation // 90).copy()
    assert (frames[0].width, frames[0].height, frames[0].rotation) == (upright.shape[1], upright.shape[0], 0)
    expected = translate_batch(model, torch.from_numpy(upright[None]), CPU)[0].float() / 255
    assert psnr(torch.from_numpy(frames[0].to_ndarray(format="rgb24")).float() / 255, expected) >= 35.0


def test_odd_sizes_become_even_for_h264(tiny, tmp_path):
    clip = make_clip(tmp_path / "odd.mkv", size=(38, 26), container_format="matroska")  # x264 needs even input too
    result = translate_clip(tiny, clip, tmp_path / "out", max_side=25)
    frame = decoded(result.output)[0]
    assert (frame.width, frame.height) == result.size == (24, 16)  # 25x17 fitted, then rounded down to even


def test_max_side_shrinks_the_frames(tiny, tmp_path):
    clip = make_clip(tmp_path / "big.mp4")
    result = translate_clip(tiny, clip, tmp_path / "out", max_side=32)
    assert (decoded(result.output)[0].width, decoded(result.output)[0].height) == (32, 24)


def test_ctrl_c_leaves_a_playable_partial_file(tiny, tmp_path):
    clip = make_clip(tmp_path / "long.mp4", frames=12)

    def press_ctrl_c(done: int, total: int | None) -> None:
        if done >= 4:
            raise KeyboardInterrupt

    with pytest.raises(Interrupted) as stop:
        translate_clip(tiny, clip, tmp_path / "out", batch_size=2, progress=press_ctrl_c)
    assert stop.value.partial == tmp_path / "out" / "long_A2B.partial.mp4"
    assert len(decoded(stop.value.partial)) == stop.value.frames == 4
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["long_A2B.partial.mp4"]


def test_truncated_input_translates_every_frame_that_decodes(tiny, tmp_path):
    clip = make_clip(tmp_path / "cut.mkv", frames=30, container_format="matroska")
    data = clip.read_bytes()
    clip.write_bytes(data[: len(data) // 2])
    result = translate_clip(tiny, clip, tmp_path / "out")
    assert 0 < result.frames < 30
    assert len(decoded(result.output)) == result.frames
    assert result.stopped is not None


def test_cli_says_where_a_truncated_input_stopped(cli, student, tmp_path):
    clip = make_clip(tmp_path / "cut.mkv", frames=30, container_format="matroska")
    clip.write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])
    result = cli("translate", clip, "-o", tmp_path / "out")
    assert result.code == 1
    assert "stopped decoding after frame" in result.err_text and "before it" in result.err_text


def test_cli_writes_clip_a2b_mp4_into_translated(cli, student, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_clip(tmp_path / "clip.mp4", audio="aac")
    result = cli("translate", "clip.mp4")
    assert result.code == 0, result.err
    assert len(decoded(tmp_path / "translated" / "clip_A2B.mp4")) == 6
    assert "audio stream copied" in result.out


def test_cli_stats_prints_flicker(cli, student, tmp_path):
    clip = make_clip(tmp_path / "clip.mp4")
    result = cli("translate", clip, "-o", tmp_path / "out", "--stats")
    assert result.code == 0, result.err
    assert "Flicker of clip_A2B.mp4" in result.out and "5 pairs" in result.out


def test_input_without_a_video_stream_is_refused_in_one_sentence(cli, student, tmp_path):
    output = av.open(str(tmp_path / "song.mp4"), "w")
    sound = output.add_stream("aac", rate=16000)
    sound.layout = "mono"
    chunk = av.AudioFrame.from_ndarray(np.zeros((1, 4000), np.float32), format="flt", layout="mono")
    chunk.sample_rate, chunk.pts = 16000, 0
    output.mux(sound.encode(chunk))
    output.mux(sound.encode(None))
    output.close()
    result = cli("translate", tmp_path / "song.mp4", "-o", tmp_path / "out")
    assert result.code == 2
    assert "holds no video stream" in result.err_text and "Traceback" not in result.err


def test_unknown_video_codec_is_refused(tiny, tmp_path):
    clip = make_clip(tmp_path / "clip.mp4")
    with pytest.raises(CgdistillError, match="--video-codec nope"):
        translate_clip(tiny, clip, tmp_path / "out", codec="nope")


def test_video_quality_outside_the_crf_scale_is_refused_before_any_work(cli, student, tmp_path):
    clip = make_clip(tmp_path / "clip.mp4")
    result = cli("translate", clip, "-o", tmp_path / "out", "--video-quality", "60")
    assert result.code == 2 and "--video-quality must be between 0 (best) and 51" in result.err_text
    assert not (tmp_path / "out").exists()


def test_a_bad_video_flag_is_refused_before_the_video_is_opened(cli, student, tmp_path):
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(b"not a video at all")
    result = cli("translate", damaged, "-o", tmp_path / "out", "--video-quality", "99")
    assert result.code == 2 and "--video-quality must be between 0 (best) and 51, got 99" in result.err_text


def test_missing_pyav_says_how_to_install(cli, student, tmp_path, monkeypatch):
    clip = make_clip(tmp_path / "clip.mp4")
    monkeypatch.setitem(sys.modules, "av", None)  # import av now raises ImportError
    result = cli("translate", clip, "-o", tmp_path / "out")
    assert result.code == 2
    assert "pip install 'cgdistill[video]'" in result.err_text


def test_animated_gif_is_a_video_and_a_still_gif_an_image(tmp_path):
    from PIL import Image

    frames = [Image.new("RGB", (16, 16), (i * 40, 0, 0)) for i in range(3)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100)
    frames[0].save(tmp_path / "still.gif")
    assert is_video_file(tmp_path / "anim.gif") and not is_video_file(tmp_path / "still.gif")


def test_animated_gif_translates_to_mp4_with_every_frame(tiny, tmp_path):
    from PIL import Image

    frames = [Image.new("RGB", (20, 16), (i * 40, 90, 0)) for i in range(3)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100)
    result = translate_clip(tiny, tmp_path / "anim.gif", tmp_path / "out")
    assert result.output.name == "anim_A2B.mp4" and len(decoded(result.output)) == 3


def test_flicker_is_output_change_minus_input_change():
    meter = FlickerMeter()
    still = np.zeros((4, 4, 3), np.uint8)
    meter.add(still, np.full_like(still, 10))
    meter.add(still + 2, np.full_like(still, 16))  # input moves by 2 levels, output by 6
    flicker = meter.result()
    assert (flicker.input_change, flicker.output_change, flicker.value, flicker.pairs) == (2.0, 6.0, 4.0, 1)


def test_an_onnx_model_translates_a_video(cli, student, tmp_path):
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    assert cli("export", "tiny-student", "-o", tmp_path / "student.onnx").code == 0
    clip = make_clip(tmp_path / "clip.mp4")
    result = cli("translate", clip, "--model", tmp_path / "student.onnx", "-o", tmp_path / "out")
    assert result.code == 0, result.err
    assert "onnxruntime" in result.err_text and len(decoded(tmp_path / "out" / "clip_A2B.mp4")) == 6


def test_images_and_a_video_in_one_call_are_all_written(cli, student, tmp_path):
    from PIL import Image

    Image.new("RGB", (24, 16), (10, 200, 30)).save(tmp_path / "photo.png")
    clip = make_clip(tmp_path / "clip.mp4")
    result = cli("translate", tmp_path / "photo.png", clip, "-o", tmp_path / "out")
    assert result.code == 0, result.err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["clip_A2B.mp4", "photo_A2B.png"]


def test_two_clips_with_one_stem_get_two_outputs(cli, student, tmp_path):
    make_clip((tmp_path / "a").mkdir() or tmp_path / "a" / "clip.mp4")
    make_clip((tmp_path / "b").mkdir() or tmp_path / "b" / "clip.mp4", frames=4)
    result = cli("translate", tmp_path / "a" / "clip.mp4", tmp_path / "b" / "clip.mp4", "-o", tmp_path / "out")
    assert result.code == 0, result.err
    assert (
        len(decoded(tmp_path / "out" / "clip_A2B.mp4")) == 6 and len(decoded(tmp_path / "out" / "clip_A2B-2.mp4")) == 4
    )


def test_frames_over_the_memory_budget_run_in_exact_tiles_equal_to_one_pass(tmp_path, tiny, monkeypatch):
    """A frame too large for the budget tiles as a photo does, within the photos' bound: fp32 tiles
    differ from one pass by float rounding only, far below half a grey level, so at most one level."""
    from cgdistill.videoio import Writer

    clip = make_clip(tmp_path / "clip.mp4", frames=3)
    written: list[np.ndarray] = []
    real_put = Writer.put

    def keep(self, item) -> None:  # the translated frames, before the codec rounds them
        if item is not END:
            written.append(item[1])
        real_put(self, item)

    monkeypatch.setattr(Writer, "put", keep)
    tiles: list[int] = []
    tiled = translate_clip(
        tiny, clip, tmp_path / "tiled", max_memory=1, tile="auto", tile_progress=lambda d, t: tiles.append(d)
    )
    tiled_frames, written[:] = list(written), []
    whole = translate_clip(tiny, clip, tmp_path / "whole", tile="off")
    assert tiles, "no frame ran in tiles"
    assert tiled.frames == whole.frames == len(tiled_frames) == len(written) == 3
    for a, b in zip(tiled_frames, written, strict=True):
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
