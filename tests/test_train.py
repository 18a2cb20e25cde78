"""Training data and loop: a real 2-step run on tiny crops, resume, and export to a loadable model."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from vaecodec.errors import InputError, UsageError
from vaecodec.models.tiny import WEIGHTS, load
from vaecodec.train.data import HELD_OUT, PHOTOS, TRAIN, ClipSampler, ClipStream, load_photos, prepare
from vaecodec.train.rate import RatePrior
from vaecodec.train.train import Config, _lr, _progress, export, train

# photos bundled with scikit-image: available without running the fetch script
TRAIN_KEYS = ["skimage:astronaut", "skimage:coffee"]
VAL_KEYS = ["skimage:chelsea"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    prepare(d, TRAIN_KEYS + VAL_KEYS)
    return d


def test_held_out_photos_never_train():
    assert set(HELD_OUT) <= set(PHOTOS)
    assert not set(HELD_OUT) & set(TRAIN)
    assert "skimage:chelsea" in HELD_OUT


def test_clip_sampler_is_seeded_and_in_range(data_dir):
    photos = load_photos(data_dir, TRAIN_KEYS)
    a = ClipSampler(photos, frames=5, size=32, seed=3).batch(3)
    b = ClipSampler(photos, frames=5, size=32, seed=3).batch(3)
    c = ClipSampler(photos, frames=5, size=32, seed=4).batch(3)
    assert a.shape == (3, 3, 5, 32, 32)
    assert a.min() >= -1 and a.max() <= 1
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, c)
    with pytest.raises(InputError):
        load_photos(data_dir, ["lomiri:not_prepared"])


def _flat(x: torch.Tensor) -> float:
    """Share of horizontally adjacent pixels that are exactly equal."""
    return (x[..., 1:] == x[..., :-1]).float().mean().item()


def test_graphics_scenes_have_flat_fills_and_leave_photo_clips_alone(data_dir):
    """Drawn scenes are mostly exact flat fills (photos resampled along a camera path almost
    never are), are seeded, and a share of 0 draws nothing extra: the clips of a seed (the
    validation clips among them) stay those of a sampler without the option."""
    photos = load_photos(data_dir, TRAIN_KEYS)
    drawn = ClipSampler(photos, frames=5, size=64, seed=3, graphics=1.0)
    g = torch.stack([drawn._graphic() for _ in range(4)])  # [4, T, 3, S, S] in [0, 1]
    filmed = ClipSampler(photos, frames=5, size=64, seed=3)
    f = torch.stack([filmed._scene() for _ in range(4)])
    assert g.shape == f.shape == (4, 5, 3, 64, 64)
    assert g.min() >= 0 and g.max() <= 1
    assert _flat(g) > 0.5 > 0.1 > _flat(f)
    a, b = (ClipSampler(photos, frames=5, size=32, seed=6, graphics=0.5).batch(4) for _ in range(2))
    assert torch.equal(a, b)
    plain = ClipSampler(photos, frames=5, size=32, seed=6).batch(4)
    assert torch.equal(ClipSampler(photos, frames=5, size=32, seed=6, graphics=0.0).batch(4), plain)
    assert not torch.equal(a, plain)
    with pytest.raises(InputError, match="graphics"):
        ClipSampler(photos, frames=5, size=32, seed=6, graphics=1.5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_clip_sampler_on_gpu_draws_the_cpu_clips(data_dir):
    """The GPU sampler shares the CPU sampler's random draws: same clips up to float rounding."""
    photos = load_photos(data_dir, TRAIN_KEYS)
    cpu = ClipSampler(photos, frames=5, size=32, seed=5).batch(8)
    gpu = ClipSampler(photos, frames=5, size=32, seed=5, device="cuda").batch(8)
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=5e-3)  # blur convs may run in TF32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_prefetch_thread_on_gpu_gives_the_in_line_batches(data_dir):
    """Clips made on the prefetch thread's own CUDA stream equal those made in line, with the
    same sampler states, and are safe to use on the training stream."""
    from vaecodec.train.train import _InLine, _Prefetch

    photos = load_photos(data_dir, TRAIN_KEYS)
    inline = _InLine(ClipSampler(photos, frames=5, size=32, seed=9, device="cuda"), 4)
    ahead = _Prefetch(ClipSampler(photos, frames=5, size=32, seed=9, device="cuda"), 4)
    try:
        for _ in range(3):
            (a, rng_a), (b, rng_b) = next(inline), next(ahead)
            torch.testing.assert_close((b * 2).cpu(), (a * 2).cpu(), rtol=0, atol=1e-6)
            assert torch.equal(rng_a, rng_b)
    finally:
        ahead.close()


def test_clip_stream_is_seeded(data_dir):
    """The GPU feeder draws reproducible batches per seed, and other clips for another seed."""
    photos = load_photos(data_dir, TRAIN_KEYS)
    a, b, c = (next(iter(ClipStream(photos, 5, 32, batch=2, seed=s))) for s in (7, 7, 8))
    assert a.shape == (2, 3, 5, 32, 32)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, c)


def test_resumed_run_equals_an_uninterrupted_one(data_dir, tmp_path):
    """Clips are made one batch ahead in a background thread; the checkpoint still stores the
    sampler state of the next batch, so 2 steps + resume to 4 train exactly like 4 steps, and
    exactly like a run that makes its clips in line (``--no-prefetch``)."""
    def cfg(run: str, steps: int, prefetch: bool = True, ema: float = 0.0) -> Config:
        return Config(data=str(data_dir), run=str(tmp_path / run), steps=steps, batch=2, size=32, frames=5,
                      val_every=100, ckpt_every=1, log_every=100, photos=TRAIN_KEYS, val_photos=VAL_KEYS,
                      val_size=32, val_clips=1, prefetch=prefetch, ema=ema)

    train(cfg("straight", 4))
    train(cfg("resumed", 2))
    train(cfg("resumed", 4))
    train(cfg("inline", 3, prefetch=False))
    train(cfg("inline", 4))
    train(cfg("straight_ema", 4, ema=0.5))  # the weight average resumes too
    train(cfg("resumed_ema", 2, ema=0.5))
    train(cfg("resumed_ema", 4, ema=0.5))
    for first, others in (("straight", ("resumed", "inline")), ("straight_ema", ("resumed_ema",))):
        a = load_file(str(tmp_path / first / "last.safetensors"))
        for other in others:
            b = load_file(str(tmp_path / other / "last.safetensors"))
            assert a.keys() == b.keys()
            for k in a:
                torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=f"{other}: {k}")
    kept = {run: any(k.startswith("ema.") for k in load_file(str(tmp_path / run / "last.safetensors")))
            for run in ("straight", "straight_ema")}
    assert kept == {"straight": False, "straight_ema": True}


def test_flicker_loss_changes_the_training(data_dir, tmp_path):
    """``--flicker`` adds a term on the frame-to-frame change of the error: same clips and
    seeds, other weights after one step, and a larger logged loss."""
    def run(name: str, flicker: float) -> tuple[dict, str]:
        cfg = Config(data=str(data_dir), run=str(tmp_path / name), steps=1, batch=2, size=32, frames=5,
                     val_every=100, ckpt_every=1, log_every=1, photos=TRAIN_KEYS, val_photos=VAL_KEYS,
                     val_size=32, val_clips=1, flicker=flicker)
        train(cfg)
        return load_file(str(tmp_path / name / "last.safetensors")), (tmp_path / name / "log.txt").read_text()

    (plain, log0), (flick, log1) = run("plain", 0.0), run("flicker", 1.0)
    assert any(not torch.equal(plain[k], flick[k]) for k in plain if k.startswith("model."))
    loss = [float(re.search(r"^step 1 loss ([0-9.e-]+)", log, re.M).group(1)) for log in (log0, log1)]
    assert loss[1] > loss[0] > 0


def test_shift_consistency_sees_only_sub_cell_aliasing(data_dir):
    """The shipped stride-8 encoder moves its latents exactly with whole-cell (8 px) moves of
    the picture, not with sub-cell ones: the term is near zero for the first and large for the
    second, and it gives the encoder a gradient."""
    from vaecodec.train.train import shift_consistency

    model = load(WEIGHTS, torch.device("cpu"), torch.float32)
    x = ClipSampler(load_photos(data_dir, TRAIN_KEYS), frames=5, size=64, seed=3).batch(2)
    with torch.no_grad():
        mean = model.encode(x)[0]
        whole, half = (shift_consistency(model, x, mean, d).item() for d in ((0, 8), (4, 4)))
    assert whole < 0.05 * half and half > 0
    model.zero_grad()
    shift_consistency(model, x, model.encode(x)[0], (3, 1)).backward()
    assert model.encoder.head.weight.grad.abs().sum() > 0


def test_equivariance_term_changes_the_training(data_dir, tmp_path):
    def run(name: str, weight: float) -> dict:
        cfg = Config(data=str(data_dir), run=str(tmp_path / name), steps=1, batch=2, size=32, frames=5,
                     val_every=100, ckpt_every=1, log_every=1, photos=TRAIN_KEYS, val_photos=VAL_KEYS,
                     val_size=32, val_clips=1, equivariance=weight)
        train(cfg)
        return load_file(str(tmp_path / name / "last.safetensors"))

    plain, moved = run("plain", 0.0), run("equivariance", 1.0)
    assert any(not torch.equal(plain[k], moved[k]) for k in plain if k.startswith("model.encoder."))


def test_time_budget_ends_the_run_and_decays_the_lr():
    cfg = Config(lr=1e-3, steps=10**6, time_budget=100.0)
    assert _progress(cfg, 500, 50.0) == 0.5 and _lr(cfg, 500, 50.0) == 1e-3
    assert 1e-4 < _lr(cfg, 500, 90.0) < 1e-3  # cosine decay over the last 20 % of the budget
    assert _progress(cfg, 500, 100.0) == 1.0 and _lr(cfg, 500, 100.0) == pytest.approx(1e-4)
    assert _progress(Config(steps=1000), 500, 1e9) == 0.5  # no budget: steps alone


def test_rate_prior_counts_real_bits():
    """Noise-free rate falls when the step grows and is lower for static latents."""
    torch.manual_seed(0)
    prior = RatePrior()
    y = torch.randn(1, 16, 1, 8, 8).repeat(1, 1, 3, 1, 1)
    y_moving = torch.randn(1, 16, 3, 8, 8)
    s_fine, s_coarse = torch.tensor([0.1]), torch.tensor([1.0])
    with torch.no_grad():
        assert prior(y, s_coarse, noise=False) < prior(y, s_fine, noise=False)
        assert prior(y, s_fine, noise=False) < prior(y_moving, s_fine, noise=False)


def test_two_step_training_resume_and_export(data_dir, tmp_path):
    run = tmp_path / "run"
    cfg = Config(data=str(data_dir), run=str(run), steps=2, batch=1, size=32, frames=5, val_every=2,
                 ckpt_every=1, log_every=1, photos=TRAIN_KEYS, val_photos=VAL_KEYS, val_size=32, val_clips=1)
    rec = train(cfg)
    assert rec["step"] == 2 and len(rec["points"]) == 3
    assert all(math.isfinite(p["psnr"]) and p["bpp"] > 0 and 0 < p["ssim"] <= 1 for p in rec["points"])
    assert "drawn" not in rec  # drawn scenes are scored only where the run trains on them
    state = json.loads((run / "state.json").read_text())["state"]
    assert state["step"] == 2 and (run / "last.safetensors").exists() and (run / "best.safetensors").exists()
    assert re.search(r"^step 2 .* \d+ms/step data \d+%$", (run / "log.txt").read_text(), re.M)

    cfg.steps = 3  # resuming continues from step 2 rather than starting over
    assert train(cfg)["step"] == 3
    assert json.loads((run / "state.json").read_text())["state"]["step"] == 3

    out = tmp_path / "w.safetensors"
    card = export(run, out, "vaecodec-tiny-test", which="last", clips=4, context_clips=4)
    assert card["train_steps"] == 3 and len(card["validation"]["points"]) == 8 and card["entropy_contexts"] == 9
    assert all(0 < p["ssim"] <= 1 for p in card["validation"]["points"])
    assert card["train_commit"] == state["commit"] and card["export_commit"]
    m = load(out, torch.device("cpu"), torch.float32)
    assert m.model_id == "vaecodec-tiny-test"
    coder = m.entropy_coder
    q = np.round(np.random.default_rng(0).normal(0, 3, (16, 2, 4, 4))).astype(np.int32)
    data = coder.encode(q, 5)
    assert data[0] == 5  # context tables: chunk version 5
    np.testing.assert_array_equal(coder.decode(data, q.shape, 5), q)

    with pytest.raises(UsageError, match="architecture"):  # this run's network is not the shipped one's shape
        export(run, tmp_path / "x.safetensors", "vaecodec-tiny-test", which="last", blend_with=WEIGHTS)
    assert not (tmp_path / "x.safetensors").exists()

    # re-export from the weights file: same network, tables rebuilt, card says where from;
    # without context tables (chunk version 4 with motion)
    again = tmp_path / "w2.safetensors"
    card2 = export("unused", again, "vaecodec-tiny-test2", clips=4, weights=out, context_clips=0)
    assert card2["entropy_contexts"] == 0
    assert card2["tables_rebuilt_from"] == "vaecodec-tiny-test" and card2["train_steps"] == 3
    assert card2["train_commit"] == card["train_commit"]
    assert card2["quality_steps"] == card["quality_steps"] and card2["entropy_tables"] == 8
    m2 = load(again, torch.device("cpu"), torch.float32)
    assert m2.model_id == "vaecodec-tiny-test2" and m2.arch == m.arch and m2.entropy_coder.context is None
    assert m2.entropy_coder.encode(q, 5, np.zeros((2, 1, 1, 2), np.int16))[0] == 4
    for (k, a), (k2, b) in zip(m.state_dict().items(), m2.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k


def test_training_with_workers_stops_at_its_time_budget(data_dir, tmp_path):
    """Clips come from a worker process; the run ends by wall time, long before --steps."""
    run = tmp_path / "run"
    cfg = Config(data=str(data_dir), run=str(run), steps=10**6, time_budget=3.0, workers=1, batch=1, size=32,
                 frames=5, val_every=10**6, ckpt_every=10**6, photos=TRAIN_KEYS, val_photos=VAL_KEYS, val_size=32,
                 val_clips=1)
    rec = train(cfg)
    state = json.loads((run / "state.json").read_text())["state"]
    assert 0 < rec["step"] == state["step"] < 10**6
    assert state["wall_s"] >= 3.0 and state["commit"]


def _grow_shipped(data_dir, tmp_path, grow: dict, **train_kw) -> tuple[dict, dict]:
    """Train the shipped weights grown by ``grow`` (Arch fields added to the shipped values)
    for 3 steps; returns the model tensors before (fp32) and after."""
    shipped = load(WEIGHTS, torch.device("cpu"), torch.float32).arch
    arch = {k: getattr(shipped, k) + grow.get(k, 0) for k in ("blocks8", "enc_blocks")}
    run = tmp_path / "run"
    cfg = Config(data=str(data_dir), run=str(run), steps=3, batch=1, size=32, frames=5, lr=1e-2,
                 val_every=10**6, ckpt_every=1, photos=TRAIN_KEYS, val_photos=VAL_KEYS, val_size=32, val_clips=1,
                 refine=shipped.refine, init=str(WEIGHTS), **arch, **train_kw)
    train(cfg)
    old = {k[len("model."):]: v.float() for k, v in load_file(str(WEIGHTS)).items() if k.startswith("model.")}
    new = {k[len("model."):]: v for k, v in load_file(str(run / "last.safetensors")).items() if k.startswith("model.")}
    return old, new


def test_freeze_init_trains_only_the_grown_parts(data_dir, tmp_path):
    """Shipped weights grown by one 1/8-res decoder block: with --freeze-init every tensor the
    weights file supplies stays bit-identical, and the new block learns."""
    old, new = _grow_shipped(data_dir, tmp_path, {"blocks8": 1}, freeze_init=True)
    assert all(torch.equal(new[k], v) for k, v in old.items())
    grown = [k for k in new if k.startswith("decoder.frame_blocks.") and k.endswith(".b.weight") and k not in old]
    assert grown and all(new[k].abs().sum() > 0 for k in grown)  # started at zero, moved


def test_freeze_decoder_trains_only_the_encoder(data_dir, tmp_path):
    """Shipped weights with two more encoder blocks, --freeze-decoder: the decoder stays
    bit-identical (files keep decoding the same way), and the encoder, the new blocks too, learns."""
    old, new = _grow_shipped(data_dir, tmp_path, {"enc_blocks": 2}, freeze_decoder=True)
    dec = [k for k in old if k.startswith("decoder.")]
    assert dec and all(torch.equal(new[k], old[k]) for k in dec)
    assert not torch.equal(new["encoder.head.weight"], old["encoder.head.weight"])
    grown = [k for k in new if k.startswith("encoder.blocks.") and k.endswith(".b.weight") and k not in old]
    assert grown and all(new[k].abs().sum() > 0 for k in grown)  # started at zero, moved


def test_freeze_encoder_trains_only_the_decoder(data_dir, tmp_path):
    """--freeze-encoder (on drawn scenes too): the encoder stays bit-identical, so every file's
    latents and rate stay as they were, and the decoder learns. Freezing both halves is refused."""
    old, new = _grow_shipped(data_dir, tmp_path, {}, freeze_encoder=True, graphics=0.5)
    enc = [k for k in old if k.startswith("encoder.")]
    assert enc and all(torch.equal(new[k], old[k]) for k in enc)
    assert not torch.equal(new["decoder.inp.weight"], old["decoder.inp.weight"])
    # the last step validates: drawn scenes beside the photos, at the same steps; the score stays the photos'
    rec = json.loads((tmp_path / "run" / "val.jsonl").read_text().splitlines()[-1])
    assert [p["step"] for p in rec["drawn"]] == [p["step"] for p in rec["points"]]
    assert all(math.isfinite(p["psnr"]) and p["bpp"] > 0 for p in rec["drawn"])
    assert rec["drawn"] != rec["points"]
    mid = rec["points"][1]
    assert rec["score"] == pytest.approx(10 ** (-mid["psnr"] / 10) + 0.01 * mid["bpp"])
    with pytest.raises(UsageError, match="nothing to train"):
        _grow_shipped(data_dir, tmp_path / "both", {}, freeze_encoder=True, freeze_decoder=True)
    assert not (tmp_path / "both" / "run").exists()  # refused before the run folder is made
    with pytest.raises(UsageError, match="graphics"):
        train(Config(data=str(data_dir), run=str(tmp_path / "share"), graphics=1.5))
    assert not (tmp_path / "share").exists()


def test_weight_average_is_validated_and_exported(data_dir, tmp_path):
    """--ema keeps a moving average beside the weights: it lies between where training started
    and where the weights went, and it, not the last weights, is what export ships."""
    run = tmp_path / "run"
    cfg = Config(data=str(data_dir), run=str(run), steps=3, batch=1, size=32, frames=5, lr=1e-2, val_every=3,
                 ckpt_every=1, photos=TRAIN_KEYS, val_photos=VAL_KEYS, val_size=32, val_clips=1,
                 refine=True, blocks8=2, init=str(WEIGHTS), ema=0.9)
    train(cfg)
    t = load_file(str(run / "last.safetensors"))
    start = load_file(str(WEIGHTS))["model.decoder.inp.weight"].float()
    w, avg = t["model.decoder.inp.weight"], t["ema.decoder.inp.weight"]
    assert not torch.equal(w, avg) and not torch.equal(avg, start)
    assert (avg - start).abs().sum() < (w - start).abs().sum()  # 3 steps at 0.9: 27 % of the way
    out = tmp_path / "w.safetensors"
    export(run, out, "vaecodec-tiny-test", which="last", clips=4, context_clips=0)
    assert torch.equal(load_file(str(out))["model.decoder.inp.weight"], avg)
    # a blend with the file it started from: a quarter of the average, three quarters of the start
    card = export(run, out, "vaecodec-tiny-test", which="last", clips=4, context_clips=0, blend_with=WEIGHTS, blend=0.25)
    shipped = load(WEIGHTS, torch.device("cpu"), torch.float32)
    assert card["blend"] == {"with": shipped.model_id, "with_sha256": shipped.weights_sha256, "share": 0.25}
    torch.testing.assert_close(load_file(str(out))["model.decoder.inp.weight"], 0.75 * start + 0.25 * avg)
    with pytest.raises(UsageError, match="share"):
        export(run, out, "vaecodec-tiny-test", which="last", blend_with=WEIGHTS, blend=1.0)
    with pytest.raises(UsageError, match="ema"):
        train(Config(data=str(data_dir), run=str(tmp_path / "bad"), ema=1.0))


def test_fit_prior_learns_the_latent_statistics(data_dir):
    """Starting from shipped weights (no training prior), the fitted prior must price the
    model's latents far below a fresh one, and leave the model untouched."""
    from vaecodec.models.tiny import TinyVAE
    from vaecodec.train.train import fit_prior, warm_start

    torch.manual_seed(0)
    cfg = Config(data=str(data_dir), photos=TRAIN_KEYS, size=32, frames=5)
    model, prior = TinyVAE(load(WEIGHTS, torch.device("cpu"), torch.float32).arch), RatePrior(16)
    assert not warm_start(model, prior, WEIGHTS)  # the shipped file has no prior to copy
    before = {k: v.clone() for k, v in model.state_dict().items()}
    clips = ClipSampler(load_photos(data_dir, TRAIN_KEYS), 5, 32, seed=1).batch(4)
    s = torch.full((4,), 0.4)
    with torch.no_grad():
        fresh = prior(model.encode(clips)[0], s, noise=False).sum().item()
    fit_prior(model, prior, clips, cfg, iters=100)
    with torch.no_grad():
        fitted = prior(model.encode(clips)[0], s, noise=False).sum().item()
    assert fitted < 0.7 * fresh
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_speed_tool_times_every_stage():
    """``python -m vaecodec.train speed`` reports each stage so a slow one can be named."""
    from vaecodec.train.speed import measure

    r = measure(None, threads=1, frames=5, height=64, width=96, repeats=2)
    stages = ("model_encode_fps", "entropy_encode_fps", "entropy_decode_fps", "model_decode_fps")
    assert all(r[k] > 0 for k in stages) and r["bytes"] > 0 and r["device"] == "cpu"
    # serial pipeline: slower than its slowest stage
    assert r["decode_fps"] <= min(r["entropy_decode_fps"], r["model_decode_fps"])


def test_speed_profile_names_the_ops_of_both_model_stages(capsys):
    """``speed --profile`` prints one op table per model stage, convolutions among the ops."""
    from vaecodec.train.__main__ import main

    assert main(["speed", "--profile", "--threads", "1", "--frames", "5", "--height", "64", "--width", "96"]) == 0
    out = capsys.readouterr().out
    assert out.count("5 frames 96x64, fp32 on cpu") == 2
    encode, decode = out.split("model decode")
    assert "model encode" in encode and "convolution" in encode and "convolution" in decode


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_unavailable_device_is_a_usage_error(tmp_path):
    """``--device cuda`` on a CPU-only machine: one clear line (exit 2), and no run folder."""
    from vaecodec.train.__main__ import main

    assert main(["train", "--device", "cuda", "--run", str(tmp_path / "run")]) == 2
    assert not (tmp_path / "run").exists()
    assert main(["speed", "--device", "cuda", "--frames", "5", "--height", "64", "--width", "64"]) == 2
