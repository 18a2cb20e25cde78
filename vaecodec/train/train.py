"""Training loop, checkpoints and export of the embedded tiny model.

Checkpoints are safetensors (model, prior, optimizer moments, RNG states) plus a JSON
state file, never pickles, so a run resumes exactly where it stopped. ``export`` turns a
checkpoint into the shipped weights file: model tensors, the entropy coder's integer
tables (built from latent histograms on training clips) and a JSON model card.
"""

from __future__ import annotations

import copy
import json
import math
import queue
import subprocess
import threading
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from vaecodec.device import pick_device
from vaecodec.entropy import BLOCK
from vaecodec.errors import InputError, UsageError
from vaecodec.models.tiny import Arch, TinyVAE
from vaecodec.train.data import HELD_OUT, TRAIN, ClipSampler, ClipStream, load_photos
from vaecodec.train.rate import RatePrior, kl_normal, psnr, shift, ssim_y


@dataclass
class Config:
    """Everything that defines a run; stored in the run's state.json."""

    data: str = "data"
    run: str = "runs/tiny"
    device: str = "cpu"
    steps: int = 4000
    batch: int = 4
    size: int = 128
    frames: int = 9  # 1 + 4k pixel frames per training clip
    lr: float = 1e-3
    lam: float = 0.01  # rate weight: loss = mse + lam * bpp
    kl: float = 1e-6  # KL weight (keeps logvar a real posterior without costing quality)
    flicker: float = 0.0  # weight of the mean squared change of the error from frame to frame
    motion: bool = True  # the rate term predicts latent frames along the coder's motion vectors (chunk v4)
    equivariance: float = 0.0  # weight of the latents' mismatch with their own sub-cell shift (shift_consistency)
    step_min: float = 0.1  # quantization steps sampled log-uniformly in [step_min, step_max]
    step_max: float = 1.6
    val_every: int = 250
    ckpt_every: int = 100
    threads: int = 1
    workers: int = 0  # clip-making CPU processes; 0 = in the training process on its device, exactly resumable
    prefetch: bool = True  # with workers 0: make the next batch in a background thread
    time_budget: float = 0.0  # seconds of training (0 = none): the run ends and the lr decays by wall time
    seed: int = 0
    log_every: int = 10
    photos: list[str] = field(default_factory=lambda: list(TRAIN))
    val_photos: list[str] = field(default_factory=lambda: list(HELD_OUT))
    val_size: int = 192
    val_clips: int = 6
    latent: int = 16  # model architecture (vaecodec.models.tiny.Arch)
    refine: bool = False
    blocks8: int = 0
    enc_blocks: int = 3
    init: str = ""  # warm start: checkpoint or weights file of a smaller tiny model
    freeze_init: bool = False  # train only what --init lacks (the grown parts) and the prior
    freeze_decoder: bool = False  # train only the encoder and the prior: a better encoder for a fixed decoder
    freeze_encoder: bool = False  # train only the decoder: the latents, so every file's rate, stay as they are
    graphics: float = 0.0  # share of training scenes drawn (flat fills, hard edges, text) instead of photographed
    ema: float = 0.0  # decay of a moving average of the weights, which validation scores and export takes (0 = off)

    @property
    def arch(self) -> Arch:
        return Arch(latent=self.latent, refine=self.refine, blocks8=self.blocks8, enc_blocks=self.enc_blocks)

    def prior(self) -> RatePrior:
        """The training rate model: motion-compensated like default files, or in place."""
        return RatePrior(self.latent, motion_block=BLOCK if self.motion else 0)


def _progress(cfg: Config, step: int, wall_s: float) -> float:
    """How far the run is, 0..1: by steps, or by wall time when that ends it sooner."""
    p = step / cfg.steps
    if cfg.time_budget > 0:
        p = max(p, wall_s / cfg.time_budget)
    return min(1.0, p)


def _lr(cfg: Config, step: int, wall_s: float = 0.0) -> float:
    """Linear warm-up, constant, then cosine decay to 10% over the last 20% of the run."""
    if step < 100:
        return cfg.lr * (step + 1) / 100
    p = _progress(cfg, step, wall_s)
    if p < 0.8:
        return cfg.lr
    frac = (p - 0.8) / 0.2
    return cfg.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * frac)))


def _val_clips(cfg: Config, drawn: bool = False) -> torch.Tensor:
    """Fixed validation clips from the held-out photos: [val_clips, 3, 9, val_size, val_size].
    ``drawn``: drawn scenes instead (``--graphics``), on a seed of their own."""
    photos = load_photos(cfg.data, cfg.val_photos)
    if drawn:
        return ClipSampler(photos, frames=9, size=cfg.val_size, seed=54321, graphics=1.0).batch(cfg.val_clips)
    return ClipSampler(photos, frames=9, size=cfg.val_size, seed=12345).batch(cfg.val_clips)


def val_steps(cfg: Config) -> list[float]:
    """Low, middle and high rate points of the training step range."""
    return [cfg.step_max, math.sqrt(cfg.step_min * cfg.step_max), cfg.step_min]


@torch.inference_mode()
def validate(model: TinyVAE, prior: RatePrior, clips: torch.Tensor, steps: list[float]) -> list[dict]:
    """PSNR, luma SSIM and ideal bpp (real rounding, prior code lengths) at each step, inference path."""
    model.eval()
    out = []
    mean = torch.cat([model.encode(c[None])[0] for c in clips])
    b, _, t, h, w = clips.shape
    for s in steps:
        sv = torch.full((b,), s, device=clips.device)
        zq = torch.round(mean / s) * s
        rec = torch.cat([model.decode(z[None]) for z in zq])
        bits = prior(mean, sv, noise=False)
        out.append({"step": s, "psnr": psnr(rec, clips), "ssim": ssim_y(rec, clips),
                    "bpp": bits.sum().item() / (b * t * h * w)})
    model.train()
    return out


def shift_consistency(model: TinyVAE, x: torch.Tensor, mean: torch.Tensor, d: tuple[int, int],
                      amp=nullcontext()) -> torch.Tensor:
    """Mean squared difference between the latents of the clips x [B, 3, T, S, S] moved by
    ``d`` = (dy, dx) pixels (training draws 1-7 each) and the clips' own latents ``mean`` moved the way the coder's
    motion prediction moves them (bilinear, ``rate.shift``). A stride-8 encoder is exact for
    whole-cell moves but not in between, where a pan then costs 3-4x the inter bits
    (docs/MODEL.md); this term asks the encoder for latents that move with the picture."""
    h, w = x.shape[-2:]
    dy, dx = d
    with amp:
        moved = model.encode(x[..., dy:dy + h - 8, dx:dx + w - 8])[0].float()  # [B, C, t, h/8-1, w/8-1]
    b, c, t, hl, wl = mean.shape
    mv = torch.tensor([dy, dx], device=x.device).expand(b * t, 1, 1, 2)  # eighths of a cell = pixels
    pred = shift(mean.transpose(1, 2).reshape(b * t, c, hl, wl), mv, max(hl, wl))
    pred = pred.view(b, t, c, hl, wl).transpose(1, 2)[..., : hl - 1, : wl - 1]
    inner = (..., slice(1, -1), slice(1, -1))  # the border cells see the padding differently
    return F.mse_loss(moved[inner], pred[inner])


def code_commit() -> str:
    """The git commit of the code that runs (``+dirty`` with uncommitted changes), for model cards."""
    repo = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


class _Prefetch:
    """Batches from ``sampler`` made one ahead in a background thread, on a CUDA stream of its
    own on a GPU, so clip making overlaps the training step instead of leaving the GPU idle
    (the sampler syncs its stream to decide on retries; the training step syncs its own to log).

    Yields (batch, sampler RNG state after that batch): a checkpoint stores that state, not the
    sampler's live one (already ahead), so a run still resumes exactly.
    """

    def __init__(self, sampler: ClipSampler, n: int) -> None:
        self.sampler, self.n = sampler, n
        self.stream = None
        if sampler.device.type == "cuda":  # its work starts after all queued so far (the photos' upload)
            self.stream = torch.cuda.Stream(sampler.device)
            self.stream.wait_stream(torch.cuda.current_stream(sampler.device))
        self.q: queue.Queue = queue.Queue(maxsize=1)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="clip-prefetch", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            with torch.cuda.stream(self.stream) if self.stream is not None else nullcontext():
                while not self.stop.is_set():
                    x = self.sampler.batch(self.n)
                    done = None
                    if self.stream is not None:
                        done = torch.cuda.Event()
                        done.record(self.stream)
                    self.q.put((x, done, self.sampler.g.get_state()))
        except Exception as e:  # noqa: BLE001 - any failure is re-raised in the training thread
            self.q.put(e)

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        item = self.q.get()
        if isinstance(item, Exception):
            raise item
        x, done, rng = item
        if done is not None:  # the training stream waits for the clips, and owns their memory from here
            main = torch.cuda.current_stream(x.device)
            main.wait_event(done)
            x.record_stream(main)
        return x, rng

    def close(self) -> None:
        self.stop.set()
        while self.thread.is_alive():  # unblock a pending put
            try:
                self.q.get(timeout=0.1)
            except queue.Empty:
                pass


class _InLine:
    """Batches made in the training thread when asked for, in ``_Prefetch``'s (batch, rng) shape."""

    def __init__(self, sampler: ClipSampler, n: int) -> None:
        self.sampler, self.n = sampler, n

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.sampler.batch(self.n), self.sampler.g.get_state()

    def close(self) -> None:
        pass


class _CpuBatches:
    """Batches from ``ClipStream`` worker processes, in ``_Prefetch``'s (batch, rng) shape."""

    def __init__(self, loader, sampler: ClipSampler) -> None:
        self.it, self.rng = iter(loader), sampler.g.get_state()  # workers draw from their own seeds

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        return next(self.it), self.rng

    def close(self) -> None:
        pass


def _save_ckpt(path: Path, model, prior, opt, sampler_rng: torch.Tensor, state: dict, avg=None) -> None:
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if avg is not None:
        tensors.update({f"ema.{k}": v.detach().cpu().contiguous() for k, v in avg.state_dict().items()})
    tensors.update({f"prior.{k}": v.detach().cpu().contiguous() for k, v in prior.state_dict().items()})
    for i, st in opt.state_dict()["state"].items():
        for k, v in st.items():
            tensors[f"opt.{i}.{k}"] = torch.as_tensor(v).detach().cpu().clone().contiguous()
    tensors["rng.torch"] = torch.get_rng_state()
    tensors["rng.sampler"] = sampler_rng
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata={"state": json.dumps(state)})
    tmp.replace(path)  # atomic: a crash never leaves a half-written checkpoint


def _section(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The tensors under ``prefix`` ("model.", "ema.", "prior.") with the prefix removed."""
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def _load_ckpt(path: Path, model, prior, opt=None, sampler: ClipSampler | None = None, avg=None) -> None:
    """Resume a run; ``avg`` gets its weight average (the weights if it kept none). Export
    passes the model itself as ``avg``, so it ships the average where the run kept one."""
    t = load_file(str(path))
    model.load_state_dict(_section(t, "model."))
    if avg is not None:
        avg.load_state_dict(_section(t, "ema.") or _section(t, "model."))
    prior.load_state_dict(_section(t, "prior."))
    if opt is not None:
        sd = opt.state_dict()
        state: dict[int, dict] = {}
        for k, v in t.items():
            if k.startswith("opt."):
                _, i, name = k.split(".", 2)
                state.setdefault(int(i), {})[name] = v
        sd["state"] = state
        opt.load_state_dict(sd)
    if sampler is not None:
        torch.set_rng_state(t["rng.torch"])
        sampler.g.set_state(t["rng.sampler"])


@torch.no_grad()
def warm_start(model: TinyVAE, prior: RatePrior, path: str | Path) -> bool:
    """Load a smaller tiny model into a larger one so the larger one starts as the same function.

    Tensors of equal shape are copied. Extra latent channels keep their fresh encoder rows
    (random means, narrow posterior) and get zero decoder input weights and a fresh prior;
    new branches (refine) start with a zero output conv. So reconstructions are unchanged at
    step 0 and the new capacity is switched on by training, not by chance.
    """
    t = load_file(str(path))
    old, old_prior = _section(t, "model."), _section(t, "prior.")
    c_old = old["decoder.inp.weight"].shape[1]
    c_new = model.latent_channels
    if c_old > c_new:
        raise UsageError(f"--init has {c_old} latent channels, more than --latent {c_new}")
    for name, p in model.state_dict().items():
        if name not in old:
            continue
        v = old[name].to(p.dtype)
        if v.shape == p.shape:
            p.copy_(v)
        elif name.startswith("encoder.head."):  # rows: c means, then c log-variances
            p[:c_old], p[c_new:c_new + c_old] = v[:c_old], v[c_old:]
        elif name == "decoder.inp.weight":  # [C2, c, 3, 3]
            p.zero_()
            p[:, :c_old] = v
        else:
            raise UsageError(f"--init: cannot map {name} {tuple(v.shape)} onto {tuple(p.shape)}")
    for name, p in prior.state_dict().items():  # per-channel rows
        if name in old_prior:
            p[:c_old] = old_prior[name]
    return bool(old_prior)


def freeze_loaded(model: TinyVAE, path: str | Path) -> int:
    """Stop training every parameter that ``path`` supplies whole (same name and shape), so only
    the grown parts learn: small CPU batches then cannot wear down a model trained with big
    GPU ones. Returns how many tensors were frozen."""
    old = _section(load_file(str(path)), "model.")
    frozen = 0
    for name, p in model.named_parameters():
        if name in old and old[name].shape == p.shape:
            p.requires_grad_(False)
            frozen += 1
    return frozen


def fit_prior(model: TinyVAE, prior: RatePrior, clips: torch.Tensor, cfg: Config, iters: int = 300) -> float:
    """Fit the rate prior to a frozen model's latents; returns the final bits per pixel.

    Shipped weights carry integer coder tables, not the training prior. Training from them
    with a fresh prior would put an arbitrary rate gradient on the encoder until the prior
    caught up, so the prior is fitted first, with the model untouched.
    """
    with torch.no_grad():
        means = model.encode(clips)[0]
    b, _, t, h, w = clips.shape
    lo, hi = math.log(cfg.step_min), math.log(cfg.step_max)
    opt = torch.optim.Adam(prior.parameters(), lr=1e-2)
    g = torch.Generator(device=clips.device).manual_seed(cfg.seed)
    for _ in range(iters):
        s = torch.exp(lo + (hi - lo) * torch.rand(b, generator=g, device=clips.device))
        bpp = prior(means, s).sum() / (b * t * h * w)
        opt.zero_grad(set_to_none=True)
        bpp.backward()
        opt.step()
    return bpp.item()


def train(cfg: Config, resume: bool = True) -> dict:
    """Run (or continue) training; returns the last validation record."""
    device = pick_device(cfg.device)
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    if (cfg.frames - 1) % 4 or cfg.size % 8:
        raise UsageError("--frames must be 1+4k and --size a multiple of 8")
    if cfg.freeze_decoder and cfg.freeze_encoder:
        raise UsageError("--freeze-decoder and --freeze-encoder together leave nothing to train")
    if not 0.0 <= cfg.graphics <= 1.0:
        raise UsageError(f"--graphics is a share of the scenes, in [0, 1], not {cfg.graphics}")
    if not 0.0 <= cfg.ema < 1.0:
        raise UsageError(f"--ema is a decay in [0, 1), not {cfg.ema}")
    photos = load_photos(cfg.data, cfg.photos)  # before the run folder: a missing data set leaves nothing behind
    run = Path(cfg.run)
    run.mkdir(parents=True, exist_ok=True)
    model, prior = TinyVAE(cfg.arch).to(device), cfg.prior().to(device)
    if device.type == "cuda":  # as in inference (tiny.CHANNELS_LAST_DEVICES); CPU runs keep their layout
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(list(model.parameters()) + list(prior.parameters()), lr=cfg.lr)
    # in-process clips are made on the training device (photos in GPU memory on a GPU)
    sampler = ClipSampler(photos, cfg.frames, cfg.size, seed=cfg.seed, device=device if cfg.workers == 0 else "cpu",
                          graphics=cfg.graphics)
    state = {"step": 0, "best": None, "wall_s": 0.0, "commit": code_commit()}
    last = run / "last.safetensors"
    avg = copy.deepcopy(model).requires_grad_(False) if cfg.ema else None
    resumed = resume and last.exists()
    if resumed:
        _load_ckpt(last, model, prior, opt, sampler, avg)
        state.update(json.loads((run / "state.json").read_text())["state"])
    elif cfg.init and not warm_start(model, prior, cfg.init):
        clips = ClipSampler(photos, cfg.frames, cfg.size, seed=cfg.seed + 1).batch(16)  # own RNG stream
        fit_prior(model, prior, clips.to(device), cfg)
    if cfg.freeze_init:
        if not cfg.init:
            raise UsageError("--freeze-init needs --init")
        freeze_loaded(model, cfg.init)
    if cfg.freeze_decoder:
        model.decoder.requires_grad_(False)
    if cfg.freeze_encoder:  # the rate prior has nothing new to learn either
        model.encoder.requires_grad_(False)
        prior.requires_grad_(False)
    if avg is not None and not resumed:  # the average starts from the weights training starts from
        avg.load_state_dict(model.state_dict())
    (run / "config.json").write_text(json.dumps(asdict(cfg), indent=1))
    clips = _val_clips(cfg).to(device)
    # a run on drawn scenes also scores drawn ones (logged beside the photos; the best checkpoint
    # stays the photos' choice, so a run's score means the same with and without --graphics)
    drawn = _val_clips(cfg, drawn=True).to(device) if cfg.graphics else None
    vsteps = val_steps(cfg)
    model.train()
    torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest convs once
    if cfg.workers > 0:
        stream = ClipStream(photos, cfg.frames, cfg.size, cfg.batch, cfg.seed + state["step"], cfg.graphics)
        batches = _CpuBatches(torch.utils.data.DataLoader(stream, batch_size=None, num_workers=cfg.workers,
                                                          pin_memory=device.type == "cuda", prefetch_factor=4),
                              sampler)
    else:
        batches = (_Prefetch if cfg.prefetch else _InLine)(sampler, cfg.batch)  # in this process
    try:
        with open(run / "log.txt", "a") as log:
            return _train_loop(cfg, model, prior, opt, batches, state, clips, vsteps, run, log, device, avg, drawn)
    finally:
        batches.close()


def _train_loop(cfg: Config, model, prior, opt, batches, state: dict, clips: torch.Tensor,
                vsteps: list[float], run: Path, log, device: torch.device, avg=None,
                drawn: torch.Tensor | None = None) -> dict:
    """The steps of ``train`` until its step or time budget is spent."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    last = run / "last.safetensors"
    t0 = time.time() - state["wall_s"]
    amp = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    ema: dict[str, float] = {}
    rec = None
    waited, t_log = 0.0, time.perf_counter()
    lo, hi = math.log(cfg.step_min), math.log(cfg.step_max)
    by_time = cfg.time_budget > 0  # then the bar counts seconds of the budget, so its ETA is right
    with Progress(TextColumn("[bold]train"), BarColumn(), TextColumn("{task.completed:.0f}/{task.total:.0f}"),
                  TextColumn("{task.fields[info]}"), TimeRemainingColumn(), transient=False) as bar:
        task = bar.add_task("train", total=cfg.time_budget if by_time else cfg.steps,
                            completed=state["wall_s"] if by_time else state["step"], info="")
        while _progress(cfg, state["step"], state["wall_s"]) < 1.0:
            step = state["step"]
            for g in opt.param_groups:
                g["lr"] = _lr(cfg, step, state["wall_s"])
            t_wait = time.perf_counter()
            x, sampler_rng = next(batches)
            x = x.to(device, non_blocking=True)  # [B, 3, T, S, S]
            waited += time.perf_counter() - t_wait
            b, _, t, h, w = x.shape
            with amp:  # bf16 convs on CUDA; latents, rate and losses stay fp32
                mean, logvar = model.encode(x)
            mean, logvar = mean.float(), logvar.float()
            z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)  # reparameterised sample
            s = torch.exp(lo + (hi - lo) * torch.rand(b, device=device))
            s5 = s.view(b, 1, 1, 1, 1)
            zq = z + (torch.round(z / s5) * s5 - z).detach()  # what the file stores, STE gradient
            with amp:
                rec_x = model.decode(zq)
            rec_x = rec_x.float()
            mse = F.mse_loss(rec_x, x) / 4  # on the [0, 1] scale
            bpp = prior(z, s).sum() / (b * t * h * w)
            kl = kl_normal(mean, logvar)
            loss = mse + cfg.lam * bpp + cfg.kl * kl
            if cfg.flicker:  # the error should not change between frames (latent-frame boundaries)
                err = rec_x - x
                loss = loss + cfg.flicker * F.mse_loss(err[:, :, 1:], err[:, :, :-1]) / 4
            if cfg.equivariance:
                d = tuple(int(v) for v in torch.randint(1, 8, (2,)))  # a sub-cell move, pixels
                loss = loss + cfg.equivariance * shift_consistency(model, x, mean, d, amp)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(list(model.parameters()) + list(prior.parameters()), 1.0)
            opt.step()
            if avg is not None:  # small batches make noisy steps: the average keeps their drift out
                with torch.no_grad():
                    for e, p in zip(avg.parameters(), model.parameters()):
                        e.lerp_(p, 1.0 - cfg.ema)
            state["step"] = step = step + 1
            cur = {"loss": loss.item(), "psnr": -10 * math.log10(max(mse.item(), 1e-12)), "bpp": bpp.item()}
            for k, v in cur.items():
                ema[k] = v if k not in ema else 0.95 * ema[k] + 0.05 * v
            info = f"loss {ema['loss']:.5f} psnr {ema['psnr']:.2f} bpp {ema['bpp']:.4f}"
            state["wall_s"] = time.time() - t0
            bar.update(task, completed=state["wall_s"] if by_time else step, info=f"step {step} {info}")
            done = _progress(cfg, step, state["wall_s"]) >= 1.0
            if step % cfg.log_every == 0:  # "data" = share of the time spent waiting for clips
                span, t_log = time.perf_counter() - t_log, time.perf_counter()
                log.write(f"step {step} {info} lr {opt.param_groups[0]['lr']:.2e} wall {state['wall_s']:.0f}s "
                          f"{1000 * span / cfg.log_every:.0f}ms/step data {100 * waited / span:.0f}%\n")
                waited = 0.0
                log.flush()
            if step % cfg.val_every == 0 or done:
                scored = model if avg is None else avg
                rec = {"step": step, "wall_s": round(state["wall_s"]), "points": validate(scored, prior, clips, vsteps)}
                mid = rec["points"][1]
                score = 10 ** (-mid["psnr"] / 10) + cfg.lam * mid["bpp"]  # val mse + lam * bpp
                rec["score"] = score
                if drawn is not None:
                    rec["drawn"] = validate(scored, prior, drawn, vsteps)
                with open(run / "val.jsonl", "a") as f:
                    f.write(json.dumps(rec) + "\n")
                log.write("val " + json.dumps(rec) + "\n")
                log.flush()
                if state["best"] is None or score < state["best"]["score"]:
                    state["best"] = {"step": step, "score": score, "points": rec["points"]}
                    _save_ckpt(run / "best.safetensors", model, prior, opt, sampler_rng, state, avg)
            if step % cfg.ckpt_every == 0 or done:
                _save_ckpt(last, model, prior, opt, sampler_rng, state, avg)
                (run / "state.json").write_text(json.dumps({"state": state, "config": asdict(cfg)}, indent=1))
    return rec or {}


# ---------------------------------------------------------------- export

QUALITIES = (1, 2, 3, 4, 5, 6, 7, 8)
DEFAULT_QUALITY = 5


def quality_steps(cfg: Config, coarsest: float | None = None, finest: float | None = None) -> np.ndarray:
    """Step per quality, geometric from ``coarsest`` down to ``finest`` (defaults: the trained
    step range); quality 1 is the coarsest."""
    n = len(QUALITIES)
    hi = cfg.step_max if coarsest is None else coarsest
    lo = cfg.step_min if finest is None else finest
    return np.array([hi * (lo / hi) ** (i / (n - 1)) for i in range(n)], np.float32)


def _source(run: str | Path, which: str, weights: str | Path | None) -> tuple[TinyVAE, Config, dict, dict]:
    """The network to export, its training config, its {step, wall_s} and card extras: from a
    run's checkpoint, or from an existing weights file (to rebuild only its entropy tables)."""
    if weights is not None:
        from vaecodec.models.tiny import load, model_card

        model = load(weights, torch.device("cpu"), torch.float32).to(memory_format=torch.contiguous_format)
        card = model_card(model.metadata)
        # photo lists are in cards since v3; older cards hold counts, and trained on the defaults
        train_cfg = {k: v for k, v in card.get("train_config", {}).items()
                     if k not in ("photos", "val_photos") or isinstance(v, list)}
        train_cfg.update(latent=model.arch.latent, refine=model.arch.refine, blocks8=model.arch.blocks8)
        extra = {"checkpoint": f"network of {model.model_id}", "tables_rebuilt_from": model.model_id,
                 "quality_steps": card.get("quality_steps")}
        return model, Config(**train_cfg), {"step": card.get("train_steps"), "wall_s": card.get("train_wall_s", 0),
                                           "commit": card.get("train_commit", "unknown")}, extra
    run = Path(run)
    ck = run / f"{which}.safetensors"
    if not ck.exists():
        raise InputError(f"no checkpoint {ck}")
    saved = json.loads((run / "state.json").read_text())
    cfg = Config(**saved["config"])
    with safe_open(str(ck), "pt") as f:
        state = json.loads(f.metadata()["state"])
    model, prior = TinyVAE(cfg.arch), cfg.prior()
    _load_ckpt(ck, model, prior, avg=model)
    return model, cfg, state, {"checkpoint": which}


def _blend(model: TinyVAE, other: str | Path, share: float) -> dict:
    """Move ``model`` to ``share`` of its weights plus ``1 - share`` of ``other``'s (a weights
    file of the same architecture). Fine-tuning toward new content (drawn graphics) pulls a
    network off the optimum it had on photos; halfway between the two keeps most of the new
    gain and little of the loss (docs/MODEL.md, v10). Returns the card's record of it."""
    from vaecodec.models.tiny import load

    if not 0.0 < share < 1.0:
        raise UsageError(f"--blend is the run's share of the weights, in (0, 1), not {share}")
    base = load(other, torch.device("cpu"), torch.float32)
    if base.arch != model.arch:
        raise UsageError(f"--blend-with {other}: its architecture {base.arch} is not the run's {model.arch}")
    theirs = base.state_dict()
    model.load_state_dict({k: torch.lerp(theirs[k], v, share) for k, v in model.state_dict().items()})
    return {"blend": {"with": base.model_id, "with_sha256": base.weights_sha256, "share": share}}


@torch.inference_mode()
def export(run: str | Path, out: str | Path, model_id: str, which: str = "best", clips: int = 48,
           version: str = "1", coarsest: float | None = None, finest: float | None = None,
           weights: str | Path | None = None, context_clips: int = 480,
           blend_with: str | Path | None = None, blend: float = 0.5) -> dict:
    """Write the shipped weights file from a run's checkpoint (or, with ``weights``, from an
    existing weights file whose network is kept and whose entropy tables are rebuilt);
    returns the model card. ``context_clips`` training clips fit the context tables of chunk
    version 5 (they have 9 x more entries than the banks); 0 leaves them out (version 4).
    ``blend_with`` ships ``blend`` of the network plus the rest of that file's (``_blend``)."""
    from vaecodec.entropy import CONTEXTS, EntropyCoder, latent_histograms
    from vaecodec.motion import quantize
    from vaecodec.quant import default_deadzone

    model, cfg, state, extra = _source(run, which, weights)
    if blend_with is not None:
        extra.update(_blend(model, blend_with, blend))
    model.eval()
    old_steps = extra.pop("quality_steps", None)
    if old_steps and coarsest is None and finest is None:
        coarsest, finest = old_steps[0], old_steps[-1]
    steps = quality_steps(cfg, coarsest, finest)
    # latent statistics on training clips (never the held-out photos)
    sampler = ClipSampler(load_photos(cfg.data, cfg.photos), frames=9, size=min(128, cfg.size * 2), seed=777)
    means = torch.cat([model.encode(sampler.batch(4))[0] for _ in range(max(1, clips // 4))]).numpy()
    deadzones = [default_deadzone(q) for q in QUALITIES]  # tables and card see what the encoder stores
    coder = None
    for _ in range(2):  # the second fit holds the blocks that the first one's banks price as not worth their bits
        rates = [coder.residual_bits(q) for q in QUALITIES] if coder else None
        intra, inter = latent_histograms(means, steps, deadzones=deadzones, motion=True, rates=rates)
        coder = EntropyCoder.from_histograms(steps, intra, inter, QUALITIES, default_quality=DEFAULT_QUALITY)
    if context_clips:
        means = torch.cat([model.encode(sampler.batch(4))[0] for _ in range(max(1, context_clips // 4))]).numpy()
        for _ in range(2):  # the second fit counts the symbols of the block choices the first one prices
            coder = coder.with_context(coder.context_histograms(means, deadzones))
    # real bits on the held-out validation clips with the real coder
    vclips = _val_clips(cfg)
    vmean = torch.cat([model.encode(c[None])[0] for c in vclips])
    b, _, t, h, w = vclips.shape
    points = []
    for qual, dz in zip(QUALITIES, deadzones):
        st = coder.step(qual).view(1, -1, 1, 1, 1)
        coded = [quantize(m, dz, coder.block, coder.residual_bits(qual)) for m in vmean / st]  # (symbols, vectors)
        nbytes = sum(len(coder.encode(q, qual, mv)) for q, mv in coded)
        rec = torch.cat([model.decode(torch.from_numpy(q)[None].float() * st) for q, _ in coded])
        points.append({"quality": qual, "step": float(st.flatten()[0]), "deadzone": dz, "motion": True,
                       "psnr": round(psnr(rec, vclips), 3),
                       "ssim": round(ssim_y(rec, vclips), 4), "bpp": round(nbytes * 8 / (b * t * h * w), 5)})
    card = {
        "model_id": model_id, "version": version, "kind": "tiny", "spatial": 8, "temporal": 4,
        "latent_channels": cfg.latent, "arch": asdict(cfg.arch), "train_steps": state["step"], "train_wall_s": round(state["wall_s"]),
        "train_commit": state.get("commit", "unknown"), "export_commit": code_commit(),
        "quality_steps": [round(float(x), 5) for x in steps], "default_quality": DEFAULT_QUALITY,
        **extra, "entropy_tables": coder.tables,
        "entropy_contexts": CONTEXTS if coder.context is not None else 0, "exported": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "train_config": asdict(cfg),
        "validation": {"photos": list(cfg.val_photos),
                       "clips": f"{cfg.val_clips} x 9 frames x {cfg.val_size}x{cfg.val_size}, seed 12345",
                       "points": points},
    }
    tensors = {f"model.{k}": v.contiguous() for k, v in model.state_dict().items()}
    tensors.update({f"entropy.{k}": v for k, v in coder.to_tensors().items()})
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out), metadata={"model_id": model_id, "arch": cfg.arch.to_meta(), "card": json.dumps(card)})
    out.chmod(0o644)  # a package file, not a private one
    return card
