"""Report images and audio previews written into the run directory.

Matplotlib is used through its object API with the Agg canvas only, so nothing here touches a
global backend or needs a display. Every file is written atomically.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from distill_live import atomic_write
from distill_train.losses import log_mel


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "clip"


def write_wav(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    audio = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)
    atomic_write(path, lambda tmp: sf.write(tmp, audio, sample_rate, subtype="PCM_16", format="WAV"))


def _figure(rows: int, cols: int, size: tuple[float, float]):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


def _curve(ax, history: dict, key: str, label_train: str, label_valid: str) -> None:
    train = [(r["step"], r[key]) for r in history.get("train", []) if key in r]
    valid = [(r["step"], r[key]) for r in history.get("valid", []) if key in r]
    if train:
        ax.plot(*zip(*train), lw=1, alpha=0.8, label=label_train)
    if valid:
        ax.plot(*zip(*valid), "o-", ms=3, lw=1.5, label=label_valid)


def _spectrogram(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    n_fft = 2 ** round(math.log2(sample_rate * 0.043))
    x = torch.from_numpy(np.asarray(audio, dtype=np.float32))[None]
    return log_mel(x, sample_rate, n_fft, n_fft // 4, 80)[0].numpy()


def codec_report(path: Path, history: dict, health: list[dict], counts: np.ndarray, original: np.ndarray | None,
                 reconstruction: np.ndarray | None, sample_rate: int, title: str, loss_label: str) -> None:
    """Loss curves, codebook usage per level, spectrograms of original vs reconstruction."""
    fig = _figure(2, 2, (13, 8))
    grid = fig.add_gridspec(2, 2)
    ax = fig.add_subplot(grid[0, 0])
    train = [(r["step"], r["loss"]) for r in history.get("train", []) if "loss" in r]
    valid = [(r["step"], r["valid"]) for r in history.get("valid", []) if "valid" in r]
    if train:
        ax.plot(*zip(*train), lw=1, alpha=0.8, label=loss_label)
    if valid:
        ax.plot(*zip(*valid), "o-", ms=3, lw=1.5, label="held out (spectral + mel)")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("codec loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)

    ax = fig.add_subplot(grid[0, 1])
    if counts.size:
        ranked = -np.sort(-counts, axis=1)  # each level's codes from most to least used
        image = np.log10(ranked + 1)
        im = ax.imshow(image, aspect="auto", interpolation="nearest", cmap="magma")
        fig.colorbar(im, ax=ax, label="log10(uses + 1)")
        ax.set_yticks(range(len(health)))
        ax.set_yticklabels([f"L{h['level']} {h['utilization']:.0%} p{h['perplexity']:.0f}" for h in health],
                           fontsize=8)
        ax.set_xlabel("codes, most used first")
    ax.set_title("codebook usage per level (utilisation, perplexity)")

    for col, (audio, name) in enumerate(((original, "original"), (reconstruction, "reconstruction"))):
        ax = fig.add_subplot(grid[1, col])
        if audio is not None and len(audio):
            spec = _spectrogram(audio, sample_rate)
            seconds = len(audio) / sample_rate
            ax.imshow(spec, origin="lower", aspect="auto", cmap="viridis", extent=(0, seconds, 0, spec.shape[0]),
                      vmin=spec.max() - 10, vmax=spec.max())
            ax.set_xlabel("seconds")
            ax.set_ylabel("mel band")
        ax.set_title(f"{name} (held-out clip)")
    fig.suptitle(title)
    _save(fig, path)


def prior_report(path: Path, history: dict, levels: int, generated: torch.Tensor | None, codebook_size: int,
                 frame_rate: float, title: str) -> None:
    """Loss per level (train and held out) and a piano roll of generated codes."""
    fig = _figure(2, 2, (13, 8))
    grid = fig.add_gridspec(2, 2)
    ax = fig.add_subplot(grid[0, 0])
    colours = [f"C{i % 10}" for i in range(levels)]
    for level in range(levels):
        key = f"level{level}"
        train = [(r["step"], r[key]) for r in history.get("train", []) if key in r]
        valid = [(r["step"], r[key]) for r in history.get("valid", []) if key in r]
        if train:
            ax.plot(*zip(*train), lw=0.8, alpha=0.5, color=colours[level])
        if valid:
            ax.plot(*zip(*valid), "o-", ms=3, lw=1.5, color=colours[level], label=f"level {level}")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats)")
    ax.set_title("prior loss per level (thin: train, dots: held out)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)

    ax = fig.add_subplot(grid[0, 1])
    _curve(ax, history, "loss", "train", "held out")
    valid = [(r["step"], r["valid"]) for r in history.get("valid", []) if "valid" in r]
    if valid:
        ax.plot(*zip(*valid), "o-", ms=3, lw=1.5, label="held out")
    ax.set_xlabel("step")
    ax.set_title("prior loss, mean over levels")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)

    if generated is not None and len(generated):
        codes = generated.cpu().numpy()
        seconds = len(codes) / frame_rate
        ax = fig.add_subplot(grid[1, 0])
        t = np.arange(len(codes)) / frame_rate
        ax.scatter(t, codes[:, 0], s=4, marker="s", c=codes[:, 0], cmap="tab20", linewidths=0)
        ax.set_xlim(0, seconds)
        ax.set_ylim(-0.5, codebook_size - 0.5)
        ax.set_xlabel("seconds")
        ax.set_ylabel("level-0 code")
        ax.set_title("generated: level-0 codes over time (piano roll)")
        ax = fig.add_subplot(grid[1, 1])
        ax.imshow(codes.T, aspect="auto", interpolation="nearest", cmap="tab20", origin="lower",
                  extent=(0, seconds, -0.5, codes.shape[1] - 0.5))
        ax.set_xlabel("seconds")
        ax.set_yticks(range(codes.shape[1]))
        ax.set_ylabel("level")
        ax.set_title("generated: codes of every level (colour = code)")
    fig.suptitle(title)
    _save(fig, path)


def generated_vs_real_report(path: Path, generated: np.ndarray | dict[str, np.ndarray], real: np.ndarray,
                             sample_rate: int) -> None:
    """Log-mel spectrograms of generated audio (one row, or one per title of a dict) above held-out real
    audio, on one time axis."""
    rows = generated if isinstance(generated, dict) else {"generated (seed 1, default controls)": generated}
    rows = {**rows, "held-out real audio, all of it, files one after another": real}
    fig = _figure(len(rows), 1, (14, 3.5 * len(rows)))
    longest = max(len(audio) for audio in rows.values()) / sample_rate
    for row, (title, audio) in enumerate(rows.items()):
        ax = fig.add_subplot(len(rows), 1, row + 1)
        ax.imshow(_spectrogram(audio, sample_rate), origin="lower", aspect="auto", cmap="magma",
                  extent=(0, len(audio) / sample_rate, 0, 80), vmin=-11.5)
        ax.set_xlim(0, longest)
        ax.set_title(title)
        ax.set_ylabel("mel band")
    ax.set_xlabel("seconds")
    _save(fig, path)
