"""Comparisons with the tolerances stated in the golden kit's README (section 4).

Each check asserts, records what it compared (shown in the pytest terminal summary) and returns the
maximum absolute error.
"""

from __future__ import annotations

import numpy as np

from golden import record


def _as_np(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _diff(ours, golden, name):
    ours, golden = _as_np(ours), _as_np(golden)
    assert ours.shape == golden.shape, f"{name}: shape {ours.shape} != golden {golden.shape}"
    return np.abs(ours.astype(np.float64) - golden.astype(np.float64))


def close(file, name, ours, golden, atol=1e-5, rtol=1e-5) -> float:
    """Network outputs, coefficients, keypoints: allclose(atol=1e-5, rtol=1e-5)."""
    d = _diff(ours, golden, name)
    bound = atol + rtol * np.abs(_as_np(golden).astype(np.float64))
    worst = float(d.max()) if d.size else 0.0
    record(file, name, f"max abs {worst:.3g} (atol {atol:g}, rtol {rtol:g})")
    assert np.all(d <= bound), f"{name}: max abs error {worst:.3g} exceeds atol={atol}, rtol={rtol}"
    return worst


def mask_like(file, name, ours, golden) -> float:
    """Generator occlusion_map and mask: atol 5e-5."""
    return close(file, name, ours, golden, atol=5e-5, rtol=0.0)


def deformation(file, name, ours, golden) -> float:
    """Deformation grid: mean abs < 1e-5, 99.9th percentile < 1e-4, max < 5e-3."""
    d = _diff(ours, golden, name)
    mean, p999, worst = float(d.mean()), float(np.percentile(d, 99.9)), float(d.max())
    record(file, name, f"mean {mean:.3g} p99.9 {p999:.3g} max {worst:.3g} (<1e-5, <1e-4, <5e-3)")
    assert mean < 1e-5 and p999 < 1e-4 and worst < 5e-3, f"{name}: mean {mean}, p99.9 {p999}, max {worst}"
    return worst


def prediction(file, name, ours, golden) -> float:
    """Rendered float frames: mean abs < 1e-4, max < 5e-3."""
    d = _diff(ours, golden, name)
    mean, worst = float(d.mean()), float(d.max())
    record(file, name, f"mean {mean:.3g} max {worst:.3g} (<1e-4, <5e-3)")
    assert mean < 1e-4 and worst < 5e-3, f"{name}: mean abs {mean:.3g}, max {worst:.3g}"
    return worst


def uint8_frames(file, name, ours, golden, max_fraction=0.01) -> float:
    """uint8 pictures from float frames: max 1 level, at most 1 % of values differ."""
    d = _diff(ours, golden, name)
    worst, frac = float(d.max()), float((d > 0).mean())
    record(file, name, f"max {worst:g} levels, {100 * frac:.3f}% differ (<=1, <={100 * max_fraction:g}%)")
    assert worst <= 1 and frac <= max_fraction, f"{name}: max {worst} levels, {100 * frac:.3f}% of values differ"
    return worst


def blended_image(file, name, ours, golden, min_psnr=40.0) -> float:
    """Own blending instead of OpenCV's Poisson solver: mean abs <= 1 level and PSNR >= 40 dB."""
    d = _diff(ours, golden, name)
    mse = float((d ** 2).mean())
    psnr = float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)
    record(file, name, f"mean abs {d.mean():.3g} PSNR {psnr:.1f} dB (<=1, >={min_psnr:g})")
    assert d.mean() <= 1 and psnr >= min_psnr, f"{name}: mean abs {d.mean():.3g}, PSNR {psnr:.1f} dB"
    return float(d.max())


def mel(file, name, ours, golden) -> float:
    """Mel spectrogram and windows: atol 1e-4."""
    return close(file, name, ours, golden, atol=1e-4, rtol=0.0)


def exact(file, name, ours, golden) -> float:
    """Integers and pictures that must be bit-identical."""
    d = _diff(ours, golden, name)
    worst = float(d.max()) if d.size else 0.0
    record(file, name, f"max abs {worst:g} (exact)")
    assert worst == 0, f"{name}: differs by up to {worst}"
    return worst


def geometry(file, name, ours, golden) -> float:
    """Float geometry (quad, trans_params, landmark arrays): rtol 1e-9."""
    return close(file, name, ours, golden, atol=1e-12, rtol=1e-9)


def image_levels(file, name, ours, golden, max_levels=2) -> float:
    """Resampled pictures made with another library than the official one: max 2 levels."""
    d = _diff(ours, golden, name)
    worst = float(d.max())
    record(file, name, f"max {worst:g} levels (<= {max_levels})")
    assert worst <= max_levels, f"{name}: differs by {worst} levels"
    return worst
