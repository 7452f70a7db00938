"""A-contrario (NFA) anomaly segmentation for normalizing-flow latents, numpy only.

Under the "good part" hypothesis H0 every latent vector z_s(p) in R^{C_s} is N(0, I), so
Z_s(p) = sum_c z_c(p)^2 ~ chi^2_{C_s}. A region (or window) whose latents are too unlikely under
H0 is reported when its Number of False Alarms, NFA = N_tests * P_H0(region), is below
10^epsilon. With epsilon = 0 the expected number of false-alarm detections on a good part is <= 1
(as far as the H0 model holds). Only numpy is imported; cv2 is used when it is importable, for
labelling the connected regions of the output mask (a numpy fallback gives the same labels).

Public API
----------
All maps may be given as (H, W), (1, H, W) or (1, 1, H, W); ``out_size`` is ``(H, W)`` in
numpy order (NOT cv2's (W, H)). Scales are listed in any order; ``channels[s]`` is C_s.

``tree_nfa(zsq, channels, out_size, epsilon=0.0, upsample="nearest") -> NFAResult``
    U-Flow's tree NFA. ``zsq[s]`` holds Z_s(p) = sum_c z_c(p)^2 (what the IR outputs). Per scale:
    max-tree (component tree of the upper level sets of Z_s, 4-connectivity; same tree as for
    mean_c z_c^2), node log10 P(R) = |R| * log10 P(chi^2_C >= min_R Z_s) with the exact chi^2 tail,
    prune every leaf-to-bifurcation branch to its most significant node, merge a bifurcation whose
    children are all leaves into one leaf when log10 P(parent) <= min log10 P(children), iterate to
    a fixed point; every pixel of a final leaf gets that leaf's log10 P, all other pixels 0. Each
    scale's map is upsampled to ``out_size``; log10 NFA = log10 N_test + min over scales, with
    N_test = sum_s H_s W_s sum_{r=1}^{H_s W_s} alpha beta^r / r (all scales' polyominoes).
    Upsampling defaults to "nearest" (the published code used bilinear): the map is piecewise
    constant on regions of latent pixels with values of order -10^2..-10^4, so bilinear blending
    dilates a region by up to one latent pixel, more for more significant regions; nearest keeps
    the region's footprint (IoU on a planted 6x6 blob: 1.0 vs 0.79). NaN in Z raises ValueError;
    +inf is treated as 1e300, and log10 P is floored at -1e30 so maps stay finite.
    Pure N(0, I) latents never come close (min log10 NFA > +570 at 32x32); the price is that
    log10 N_test ~ 0.609 H W makes the tree blind with few channels at high resolution: with C = 24
    at 32x32 a 6x6 patch needs std ~3 to be detected, with C = 304 std ~1.5 suffices.

``tree_nfa_from_latent(latents, out_size, epsilon=0.0, upsample="nearest")``
    Same, from full latents ``latents[s]`` of shape (C_s, H_s, W_s) or (1, C_s, H_s, W_s).

``tree_nfa_screened(zsq, channels, out_size, epsilon=0.0, upsample="nearest", need_min=True)``
    What the edge decision uses: ``(result, lower_bound)``. A per-scale lower bound on every node
    (a node at level Z = f_k has at most #{Z >= f_k} pixels, so log10 P >= #{Z >= f_k} L(f_k))
    costs one sort; scales whose bound can neither reach epsilon nor lower the minimum are not
    built, and with need_min=False and no scale able to reach epsilon no tree is built at all
    (result None). Mask, regions and minimum are always tree_nfa's, exactly (tested).

``window_nfa(counts, channels, out_size, window=5, p=0.9, epsilon=0.0, upsample="bilinear")``
    The older window NFA. ``counts[s]`` holds, per pixel, the number of channels with
    z_c^2 >= tau, tau = chi^2_1 quantile at p (``exceedance_threshold(p)``; the IR can compute it in
    graph, or use ``exceedance_counts``). The statistic, exactly: for the (2h+1) x (2h+1) window
    around each pixel (reflect-101 padding, so every window has n = (2h+1)^2 pixels),
    K = sum_window count, x = K / C_s, and
        log10 P_s(p) = log10 P(Bin(n, 1 - p) >= x) = log10 P(Bin(n, 1 - p) >= ceil(K / C_s)).
    Under H0 the indicators 1[z_c^2 >= tau] are Bernoulli(1 - p), so x is the window count averaged
    over channels; treating it as Bin(n, 1 - p) (as if the C channels were copies of one another)
    is deliberately conservative compared with the independent-channel law Bin(n C, 1 - p) / C:
    that one (3 scales 32/16/8, C = 24/40/112, same sum over scales) flags 3 % of the pixels of
    exact N(0, I) latents, 61 % at std 1.05 and 99.6 % at std 1.1 (measured). ``ceil`` is
    the literal tail P(X >= x) for a real x; scipy's ``binom.logsf(x, ...)`` (used by the published
    code) is P(X > x), which differs only when K is a multiple of C and is then one step
    anti-conservative. Per scale this is box-sum -> integer division -> (n+1)-entry lookup table.
    The per-scale maps are upsampled, SUMMED over scales, and log10 NFA = log10(sum_s H_s W_s) +
    sum. ``window`` (an int) is the window side at the finest scale: h_s = max(1, int(window *
    W_s / W_finest) // 2) (7 -> 7x7, 3x3, 3x3 for 32/16/8), capped at min(H_s, W_s) - 1; or give
    one side per scale.
    Defaults window 5, p 0.9 (the original U-Flow ones): on a std-2 6x6 blob seen at all three
    scales (C = 24/40/112) they give IoU ~0.77 where anomalib's (7, 0.5) gives ~0.17; both give no
    false alarm on N(0, I) latents. Unlike the tree, power does not depend on C (x averages over C).

``window_nfa_from_latent(latents, out_size, window=5, p=0.9, epsilon=0.0, upsample="bilinear")``
    Same, from full latents.

``log10_chi2_sf(x, k) -> ndarray``: exact log10 P(chi^2_k >= x) (regularized upper incomplete gamma:
    series below x/2 = k/2 + 1, Lentz continued fraction above, both in log space). 0 for x <= 0,
    -inf for x = +inf, NaN for NaN. Finite however far in the tail (x = 1e6, k = 1000 gives about
    -2.1e5): where scipy's logsf underflows to -inf this keeps the true value.
``log10_binom_sf_table(n, q) -> ndarray``: T[k] = log10 P(Bin(n, q) >= k), k = 0..n (cached).
``log10_n_tests(h, w) -> float``: log10(h w sum_{r=1}^{h w} alpha beta^r / r), cached per
    resolution; 118.9 for 14x14, 476.9 for 28x28. ``log10_n_tests_total(shapes)`` sums over scales.
``exceedance_threshold(p) -> float``: tau = chi^2_1 quantile at p.
``exceedance_counts(z, p) -> int32 (H, W)``: number of channels with z_c^2 >= tau.

``NFAResult``: ``log10_nfa_map`` (H, W) float32 at ``out_size``; ``mask`` = log10_nfa_map < epsilon
(True = anomalous; anomalib's port returns the inverse); ``regions``: the 8-connected components
of ``mask``, largest significance first, each a ``Region(area, bbox, log10_nfa, scale)`` with
bbox = (x0, y0, x1, y1) half-open in output pixels (``map[y0:y1, x0:x1]``), log10_nfa the
region's minimum and scale the index (in the order given) of the scale that attains it.
``NFAResult.min_log10_nfa`` is the part-level score (min of the map).

Defects of public implementations that this module does not have: the Chernoff bound
-(C/2)(x/C - 1 - ln(x/C)) used for x <= C (makes a latent with std 0.93 flag every pixel), and
the inverted mask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Sequence

import numpy as np

__all__ = [
    "NFAResult",
    "Region",
    "exceedance_counts",
    "exceedance_threshold",
    "log10_binom_sf_table",
    "log10_chi2_sf",
    "log10_n_tests",
    "log10_n_tests_total",
    "tree_nfa",
    "tree_nfa_from_latent",
    "tree_nfa_screened",
    "window_nfa",
    "window_nfa_from_latent",
]

_LN10 = math.log(10.0)
POLYOMINO_ALPHA = 0.316915
POLYOMINO_BETA = 4.062570
_LOG_FLOOR = -1e30  # finite floor for log10 P: float32 maps, interpolation never meets inf * 0


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Region:
    area: int  # pixels at output resolution
    bbox: tuple[int, int, int, int]  # x0, y0, x1, y1, half-open, output pixels
    log10_nfa: float  # min of log10 NFA over the region
    scale: int  # index of the scale that attains it


@dataclass(frozen=True)
class NFAResult:
    log10_nfa_map: np.ndarray  # (H, W) float32
    mask: np.ndarray  # (H, W) bool, log10_nfa_map < epsilon
    regions: list[Region] = field(default_factory=list)

    @property
    def min_log10_nfa(self) -> float:
        return float(self.log10_nfa_map.min()) if self.log10_nfa_map.size else math.inf

    @property
    def is_anomalous(self) -> bool:
        return bool(self.regions)


# --------------------------------------------------------------------------- chi^2 tail


def _log_lower_series(a: float, y: np.ndarray) -> np.ndarray:
    """ln P(a, y) (regularized lower gamma) by its power series; for 0 < y < a + 1."""
    term = np.full(y.shape, 1.0 / a)
    total = term.copy()
    ap = a
    for _ in range(100000):
        ap += 1.0
        term *= y / ap
        total += term
        if np.all(term <= total * 1e-17):
            break
    return np.log(total) - y + a * np.log(y) - math.lgamma(a)


def _log_upper_cf(a: float, y: np.ndarray) -> np.ndarray:
    """ln Q(a, y) (regularized upper gamma) by Lentz's continued fraction; for y >= a + 1."""
    tiny = 1e-300
    b = y + 1.0 - a
    c = np.full(y.shape, 1.0 / tiny)
    d = 1.0 / b
    h = d.copy()
    for i in range(1, 100000):
        an = -i * (i - a)
        b = b + 2.0
        d = an * d + b
        d[np.abs(d) < tiny] = tiny
        c = b + an / c
        c[np.abs(c) < tiny] = tiny
        d = 1.0 / d
        delta = d * c
        h *= delta
        if np.all(np.abs(delta - 1.0) < 1e-15):
            break
    return np.log(h) - y + a * np.log(y) - math.lgamma(a)


def log10_chi2_sf(x, k: int) -> np.ndarray:
    """Exact log10 P(chi^2_k >= x), elementwise; 0 for x <= 0, finite for any finite x."""
    if not k >= 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {k}")
    x = np.asarray(x, dtype=np.float64)
    a = 0.5 * float(k)
    y = 0.5 * x
    out = np.zeros(x.shape, dtype=np.float64)
    out[np.isnan(y)] = np.nan
    out[y == np.inf] = -np.inf
    ser = (y > 0) & (y < a + 1.0)
    cf = (y >= a + 1.0) & np.isfinite(y)
    if ser.any():
        p = np.exp(_log_lower_series(a, y[ser]))
        out[ser] = np.log1p(-np.minimum(p, 1.0)) / _LN10
    if cf.any():
        out[cf] = _log_upper_cf(a, y[cf]) / _LN10
    return out


class _Chi2Log10SF:
    """log10 P(chi^2_k >= x) for one k, fast: cubic Hermite on a grid in u = sqrt(x) (where the
    function is smooth, down to x = 0 even for k = 1), exact values and exact derivatives at the
    nodes; beyond the grid, the closed-form asymptote times a second Hermite table (`_far_table`).
    Max abs error ~1e-9 over the grid, relative ~1e-12 beyond it (tested)."""

    def __init__(self, k: int, du: float = 0.02) -> None:
        self.k = k
        a = 0.5 * k
        x_hi = k + 40.0 * math.sqrt(2.0 * k) + 100.0
        n = int(math.ceil(math.sqrt(x_hi) / du)) + 1
        u = np.arange(n) * du
        x = u * u
        f = log10_chi2_sf(x, k)
        # d/dx ln sf = -pdf/sf; pdf in log space; d/du = 2u d/dx.
        with np.errstate(divide="ignore", invalid="ignore"):
            logpdf = (a - 1.0) * np.log(x) - 0.5 * x - a * math.log(2.0) - math.lgamma(a)
            dlnsf_dx = -np.exp(logpdf - f * _LN10)
            dfdu = 2.0 * u * dlnsf_dx / _LN10
        if k <= 2:  # 2u * pdf(u^2) has a finite limit at u = 0
            dfdu[0] = -2.0 / math.sqrt(2.0 * math.pi) / _LN10 if k == 1 else 0.0
        else:
            dfdu[0] = 0.0
        self.du = du
        self.u_max = u[-1]
        self.f = f
        self.d = dfdu * du  # derivatives scaled to unit spacing
        # the same cubic Hermite per interval in power form (Horner: 3 multiply-adds per value)
        self._c = _hermite_power_form(f, self.d)
        self._far_c = self._far_table()

    def _far_table(self, n: int = 2049) -> np.ndarray:
        """Beyond the grid (y = x/2 > y_hi): ln Q(a, y) = -y + (a-1) ln y - ln Gamma(a) + g, where
        g = ln(Gamma(a, y) e^y y^(1-a)) -> 0 smoothly as v = y_hi / y -> 0 (g ~ (a-1) v / y_hi).
        g on a uniform grid in v in [0, 1], exact values (continued fraction) and derivatives
        (dg/dy = 1 - e^-g - (a-1)/y), the same cubic Hermite: a defect's far tail costs a lookup,
        not a continued-fraction loop."""
        a, y_hi = 0.5 * self.k, 0.5 * self.u_max * self.u_max
        v = np.arange(n) / (n - 1.0)
        y = y_hi / v[1:]
        g = np.zeros(n)
        g[1:] = _log_upper_cf(a, y) + y - (a - 1.0) * np.log(y) + math.lgamma(a)
        dgdv = np.empty(n)
        dgdv[0] = (a - 1.0) / y_hi
        dgdv[1:] = -(y * y / y_hi) * (-np.expm1(-g[1:]) - (a - 1.0) / y)
        return _hermite_power_form(g, dgdv / (n - 1.0))

    def _far(self, x: np.ndarray) -> np.ndarray:
        """log10 P(chi^2_k >= x) for finite x past the grid, from the far table."""
        a, y_hi = 0.5 * self.k, 0.5 * self.u_max * self.u_max
        y = 0.5 * x
        g = _hermite_eval(self._far_c, (y_hi * len(self._far_c)) / y)  # grid coordinate (n - 1) v
        return (g - y + (a - 1.0) * np.log(y) - math.lgamma(a)) / _LN10

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        out = _hermite_eval(self._c, np.minimum(np.sqrt(np.maximum(x, 0.0)) * (1.0 / self.du), self.f.size - 1))
        far = x > self.u_max * self.u_max
        if far.any():
            xf = x[far]
            fin = np.isfinite(xf)
            if fin.all():
                out[far] = self._far(xf)
            else:  # +inf, NaN: the exact function's conventions
                val = log10_chi2_sf(xf, self.k)
                val[fin] = self._far(xf[fin])
                out[far] = val
        return out


def _hermite_power_form(f: np.ndarray, d: np.ndarray) -> np.ndarray:
    """(n-1, 4) coefficients of the cubic Hermite through values f and unit-spacing derivatives d,
    per interval, for Horner evaluation in t in [0, 1]."""
    f0, f1, d0, d1 = f[:-1], f[1:], d[:-1], d[1:]
    return np.stack([f0, d0, 3 * (f1 - f0) - 2 * d0 - d1, 2 * (f0 - f1) + d0 + d1], 1)


def _hermite_eval(coef: np.ndarray, u: np.ndarray) -> np.ndarray:
    """The piecewise cubic of `_hermite_power_form` at grid coordinates u in [0, n-1] (node i at
    u = i; u = n-1 falls in the last interval)."""
    i = np.minimum(u.astype(np.intp), len(coef) - 1)
    t = u - i
    c = coef[i]
    return ((c[..., 3] * t + c[..., 2]) * t + c[..., 1]) * t + c[..., 0]


@lru_cache(maxsize=32)
def _chi2_table(k: int) -> _Chi2Log10SF:
    return _Chi2Log10SF(k)


# --------------------------------------------------------------------------- binomial, tau


@lru_cache(maxsize=64)
def log10_binom_sf_table(n: int, q: float) -> np.ndarray:
    """T[k] = log10 P(Bin(n, q) >= k) for k = 0..n (read-only array)."""
    if not (0.0 < q < 1.0) or n < 1:
        raise ValueError(f"need n >= 1 and 0 < q < 1, got n={n}, q={q}")
    j = np.arange(n + 1)
    lg = np.array([math.lgamma(v + 1.0) for v in range(n + 1)])
    logpmf = lg[n] - lg - lg[::-1] + j * math.log(q) + (n - j) * math.log1p(-q)
    tail = np.logaddexp.accumulate(logpmf[::-1])[::-1] / _LN10
    tail[0] = 0.0
    tail = np.minimum(tail, 0.0)
    tail.setflags(write=False)
    return tail


@lru_cache(maxsize=64)
def exceedance_threshold(p: float) -> float:
    """tau with P(chi^2_1 <= tau) = p, i.e. P(|N(0,1)| >= sqrt(tau)) = 1 - p (numpy-free bisection)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    lo, hi = 0.0, 40.0  # t = sqrt(tau / 2); erfc(t) = 1 - p is decreasing in t
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if math.erfc(mid) > 1.0 - p:
            lo = mid
        else:
            hi = mid
    t = 0.5 * (lo + hi)
    return 2.0 * t * t


def exceedance_counts(z: np.ndarray, p: float) -> np.ndarray:
    """Per pixel, the number of channels c with z_c^2 >= tau(p); z is (C, H, W) or (1, C, H, W)."""
    z = _as_chw(z)
    return np.count_nonzero(z * z >= exceedance_threshold(p), axis=0).astype(np.int32)


# --------------------------------------------------------------------------- number of tests


@lru_cache(maxsize=256)
def log10_n_tests(h: int, w: int) -> float:
    """log10( h w * sum_{r=1}^{h w} alpha beta^r / r ): 4-connected polyominoes of up to h w
    pixels times positions (U-Flow's count), computed in log space."""
    n = int(h) * int(w)
    if n < 1:
        raise ValueError(f"empty resolution {h}x{w}")
    # sum_r beta^r / r = beta^n * sum_{j=0}^{n-1} beta^-j / (n - j); terms past j ~ 600 are < 1e-300.
    j = np.arange(min(n, 1000))
    s = np.sum(np.exp(-j * math.log(POLYOMINO_BETA)) / (n - j))
    return (
        math.log10(n)
        + math.log10(POLYOMINO_ALPHA)
        + n * math.log10(POLYOMINO_BETA)
        + math.log10(s)
    )


def log10_n_tests_total(shapes: Sequence[tuple[int, int]]) -> float:
    """log10 of sum over scales of 10**log10_n_tests(h, w)."""
    return _log10_n_tests_total(tuple((int(h), int(w)) for h, w in shapes))


@lru_cache(maxsize=64)
def _log10_n_tests_total(shapes: tuple[tuple[int, int], ...]) -> float:
    v = np.array([log10_n_tests(h, w) for h, w in shapes])
    m = v.max()
    return float(m + np.log10(np.sum(10.0 ** (v - m))))


# --------------------------------------------------------------------------- helpers


def _as_hw(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    while a.ndim > 2 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2:
        raise ValueError(f"expected an (H, W) map (optionally with leading 1-dims), got {a.shape}")
    return a


def _as_chw(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z)
    if z.ndim == 4 and z.shape[0] == 1:
        z = z[0]
    if z.ndim != 3:
        raise ValueError(f"expected a (C, H, W) latent (optionally (1, C, H, W)), got {z.shape}")
    return z


@lru_cache(maxsize=64)
def _resize_taps(n_in: int, n_out: int, mode: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per output index: two source indices and the second one's weight. Bilinear uses half-pixel
    centres with edge clamping (cv2 INTER_LINEAR, torch align_corners=False); nearest uses
    floor(i * n_in / n_out) (cv2 INTER_NEAREST)."""
    rows = np.arange(n_out)
    if mode == "nearest":
        i0 = np.minimum((rows * n_in) // n_out, n_in - 1)
        i1 = i0
        w1 = np.zeros(n_out)
    elif mode == "bilinear":
        src = np.clip((rows + 0.5) * (n_in / n_out) - 0.5, 0.0, n_in - 1)
        i0 = np.floor(src).astype(np.intp)
        i1 = np.minimum(i0 + 1, n_in - 1)
        w1 = src - i0
    else:
        raise ValueError(f"upsample must be 'bilinear' or 'nearest', got {mode!r}")
    for a in (i0, i1, w1):
        a.setflags(write=False)
    return i0, i1, w1


def _resize(a: np.ndarray, out_size: tuple[int, int], mode: str) -> np.ndarray:
    """Separable resize of an (h, w) map to out_size = (H, W), in a's float dtype."""
    h, w = a.shape
    oh, ow = out_size
    if (h, w) == (oh, ow):
        return a.copy()
    y0, y1, wy = _resize_taps(h, oh, mode)
    x0, x1, wx = _resize_taps(w, ow, mode)
    if mode == "nearest":
        return a[:, x0][y0]
    # columns on the small map first, then whole-row gathers (contiguous) at full size
    t0 = a[:, x0]
    t = a[:, x1] - t0
    t *= wx.astype(a.dtype)
    t += t0  # (h, ow)
    out = t[y1]
    r0 = t[y0]
    out -= r0
    out *= wy.astype(a.dtype)[:, None]
    out += r0
    return out


def _resize_at(a: np.ndarray, py: int, px: int, out_size: tuple[int, int], mode: str) -> float:
    """The value _resize(a, out_size, mode) has at output pixel (py, px), without resizing."""
    h, w = a.shape
    if (h, w) == tuple(out_size):
        return float(a[py, px])
    y0, y1, wy = _resize_taps(h, out_size[0], mode)
    x0, x1, wx = _resize_taps(w, out_size[1], mode)
    top = a[y0[py], x0[px]] + wx[px] * (a[y0[py], x1[px]] - a[y0[py], x0[px]])
    bot = a[y1[py], x0[px]] + wx[px] * (a[y1[py], x1[px]] - a[y1[py], x0[px]])
    return float(top + wy[py] * (bot - top))


def _combine(smalls: Sequence[np.ndarray], out_size: tuple[int, int], mode: str, op) -> np.ndarray:
    """op-reduce (np.add / np.minimum) of the per-scale maps resized to out_size, float32."""
    total = _resize(smalls[0].astype(np.float32), out_size, mode)
    for m in smalls[1:]:
        op(total, _resize(m.astype(np.float32), out_size, mode), out=total)
    return total


def _label_stats(mask: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """8-connected labels (0 = background, 1..n) and, per region 1..n (row r - 1), its half-open
    box and area as int64 (x0, y0, x1, y1, area). cv2 when importable
    (connectedComponentsWithStats), numpy otherwise."""
    try:
        import cv2  # noqa: PLC0415  (optional; present on the edge install)
    except ImportError:  # pragma: no cover - exercised by the tests through _label_numpy
        n, lab = _label_numpy(mask)
        return n, lab, _region_stats(lab, n)
    n, lab, st, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8, ltype=cv2.CV_32S)
    st = st[1:].astype(np.int64)
    st[:, 2] += st[:, 0]  # width -> x1
    st[:, 3] += st[:, 1]  # height -> y1
    return n - 1, lab, st


def _region_stats(lab: np.ndarray, n: int) -> np.ndarray:
    """(x0, y0, x1, y1, area) per label 1..n of a label image, numpy only."""
    ys, xs = np.nonzero(lab)
    labs = lab[ys, xs] - 1
    st = np.empty((n, 5), dtype=np.int64)
    st[:, 0] = st[:, 1] = np.iinfo(np.int64).max
    st[:, 2] = st[:, 3] = -1
    np.minimum.at(st[:, 0], labs, xs)
    np.minimum.at(st[:, 1], labs, ys)
    np.maximum.at(st[:, 2], labs, xs + 1)
    np.maximum.at(st[:, 3], labs, ys + 1)
    st[:, 4] = np.bincount(labs, minlength=n)
    return st


def _label_numpy(mask: np.ndarray) -> tuple[int, np.ndarray]:
    """8-connected labelling by min-label propagation with pointer jumping (numpy only)."""
    h, w = mask.shape
    big = h * w
    lab = np.where(mask, np.arange(big).reshape(h, w), big)
    flat_idx = np.flatnonzero(mask)
    if flat_idx.size == 0:
        return 0, np.zeros((h, w), dtype=np.int32)
    while True:
        pad = np.pad(lab, 1, constant_values=big)
        new = lab.copy()
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                if dy or dx:
                    np.minimum(new, pad[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w], out=new)
        new = np.where(mask, new, big)
        flat = new.ravel()
        for _ in range(64):  # pointer jumping: label <- label of the label's pixel
            nxt = flat.copy()
            nxt[flat_idx] = flat[flat[flat_idx]]
            if np.array_equal(nxt, flat):
                break
            flat = nxt
        new = flat.reshape(h, w)
        if np.array_equal(new, lab):
            break
        lab = new
    roots, inv = np.unique(lab[mask], return_inverse=True)
    out = np.zeros((h, w), dtype=np.int32)
    out[mask] = inv.astype(np.int32) + 1
    return int(roots.size), out


def _finish(
    log10_nfa: np.ndarray,
    per_scale: Sequence[np.ndarray],
    out_size: tuple[int, int],
    mode: str,
    epsilon: float,
) -> NFAResult:
    """Mask, regions. per_scale: the per-scale log10 P maps at latent size; a region's scale is the
    one with the minimum (tree) / most negative (window) contribution at the region's argmin."""
    nfa32 = np.asarray(log10_nfa, dtype=np.float32)
    mask = nfa32 < np.float32(epsilon)
    regions: list[Region] = []
    if mask.any():
        n, lab, stats = _label_stats(mask)
        ys, xs = np.nonzero(mask)
        labs = lab[ys, xs] - 1
        vals = nfa32[ys, xs]
        order = np.lexsort((vals, labs))  # by label, then value: first of each label = argmin
        lo = labs[order]
        first = np.flatnonzero(np.concatenate(([True], lo[1:] != lo[:-1])))
        for j in order[first].tolist():
            x0, y0, x1, y1, area = stats[labs[j]].tolist()
            py, px = ys[j], xs[j]
            s = int(np.argmin([_resize_at(m, py, px, out_size, mode) for m in per_scale]))
            regions.append(Region(area=area, bbox=(x0, y0, x1, y1), log10_nfa=float(vals[j]), scale=s))
        regions.sort(key=lambda g: g.log10_nfa)
    return NFAResult(log10_nfa_map=nfa32, mask=mask, regions=regions)


# --------------------------------------------------------------------------- tree NFA


@lru_cache(maxsize=16)
def _grid_neighbours(h: int, w: int) -> np.ndarray:
    """(h w, 4) 4-neighbour indices, h w (an out-of-range sentinel) where there is none."""
    n = h * w
    idx = np.arange(n).reshape(h, w)
    nb = np.full((h, w, 4), n, dtype=np.intp)
    nb[1:, :, 0] = idx[:-1, :]
    nb[:-1, :, 1] = idx[1:, :]
    nb[:, 1:, 2] = idx[:, :-1]
    nb[:, :-1, 3] = idx[:, 1:]
    nb = nb.reshape(n, 4)
    nb.setflags(write=False)
    return nb


def _levels(zsq: np.ndarray) -> np.ndarray:
    """Z as the tree sees it: float64, flat, +inf clipped to 1e300; NaN raises ValueError."""
    return _levels_all([zsq])[1][0]


def _levels_all(maps: Sequence[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """`_levels` of every scale, computed on one concatenated buffer (a few numpy calls per part
    instead of a few per scale): (the buffer, one flat view of it per scale)."""
    flat = np.concatenate([np.ravel(m) for m in maps], dtype=np.float64)
    if np.isnan(flat).any():
        raise ValueError("zsq contains NaN")
    np.clip(flat, 0.0, 1e300, out=flat)
    ends = np.cumsum([np.size(m) for m in maps]).tolist()
    return flat, [flat[lo:hi] for lo, hi in zip([0] + ends, ends)]


def _tree_bound(f: np.ndarray, channels: int, order: np.ndarray | None = None) -> float:
    """A lower bound on log10 P of every node of the max-tree of levels f (so on every value of
    the scale's map): a node at level t = f_k contains only pixels with Z >= t, so its area is at
    most K_k = #{Z >= f_k}, and log10 P = max(area * L(t), floor) >= K_k * L(f_k) because L <= 0
    (L: the same tail table the tree uses, at the same levels; rounding is monotone). Beyond the
    table's grid, where the tree evaluates the exact tail by continued fraction, the closed form
    Gamma(a, y) >= y^(a-1) e^-y (a = C/2 >= 1) stands in, less a relative slack for rounding."""
    return _bound_of(_bound_terms(f, channels, order))


def _bound_of(terms: np.ndarray) -> float:
    """The scale's bound from its `_bound_terms`: their minimum, floored like the tree's values."""
    return float(max(np.min(terms), _LOG_FLOOR))


def _bound_terms(f: np.ndarray, channels: int, order: np.ndarray | None = None) -> np.ndarray:
    """K_k L(f_k) for the levels in processing order (decreasing): a lower bound on log10 P of
    any node at level f_k (see `_tree_bound`)."""
    if order is None:
        order = np.argsort(-f, kind="stable")
    fs = f[order]  # decreasing
    k = np.searchsorted(-fs, -fs, side="right")  # K_k, ties included
    table = _chi2_table(channels)
    a = 0.5 * channels
    nf = int(np.count_nonzero(fs > table.u_max * table.u_max)) if a >= 1.0 else 0  # far values: a prefix
    tail = np.empty_like(fs)
    if nf < fs.size:
        tail[nf:] = table(fs[nf:])
    if nf:
        y = 0.5 * fs[:nf]
        lb = ((a - 1.0) * np.log(y) - y - math.lgamma(a)) / _LN10
        tail[:nf] = lb - (np.abs(lb) * 1e-9 + 1e-9)
    return k * tail


_BIN_U = 0.1  # bin width of the sort-free bound, in u = sqrt(Z)


@lru_cache(maxsize=64)
def _binned_bound_table(channels: int) -> np.ndarray:
    """L at the upper edge of each u-bin (`_binned_bound`), less a slack that covers the
    interpolated table's deviation from monotonicity (~1e-9) and rounding."""
    table = _chi2_table(channels)
    m = int(table.u_max // _BIN_U)  # bins [j w, (j+1) w) that lie inside the table's grid
    upper = table((np.arange(1, m + 1) * _BIN_U) ** 2)
    return upper - (np.abs(upper) * 1e-7 + 1e-7)


def _binned_bound(f: np.ndarray, channels: int) -> float:
    """A cheaper, weaker lower bound than `_tree_bound` (no sort of the whole map): the levels
    binned by sqrt(Z).

    For a pixel in bin j = [e_j, e_j+1): its node's area is at most K_j = #{Z >= e_j} and its tail
    L(Z) >= L(e_j+1) (L decreases), so K L >= K_j L(e_j+1) for both factors' signs (L <= 0). The
    minimum over occupied bins bounds every value of the scale's map from below, like
    `_tree_bound`, within a few % of it. The few levels past the last bin (a defect's strongest
    pixels, beyond the table's grid or near its end) are sorted and take `_tree_bound`'s exact terms:
    every other pixel lies below them, so their K counts only them."""
    f = np.asarray(f, dtype=np.float64).ravel()
    return _binned_bounds(f, (f.size,), (int(channels),))[0]


@lru_cache(maxsize=32)
def _binned_plan(sizes: tuple[int, ...], channels: tuple[int, ...]):
    """What `_binned_bounds` needs for one layout of scales: per pixel, its scale's bin cap m_s
    (bins 0..m_s-1 lie inside the table's grid, bin m_s collects the levels past them) and the
    offset of its scale's row in a (scales, width) histogram; per row, L at each bin's upper edge
    and which columns are bins inside the grid (from column m_s on, pixels are bounded exactly);
    where each scale starts in the buffer."""
    tables = [_binned_bound_table(c) for c in channels]
    caps = np.array([t.size for t in tables], dtype=np.intp)
    width = int(caps.max()) + 1
    lhi = np.zeros((len(tables), width))
    for s, t in enumerate(tables):
        lhi[s, :t.size] = t
    inside = np.arange(width)[None, :] < caps[:, None]
    cap = np.repeat(caps.astype(np.float64), sizes)
    offset = np.repeat(np.arange(len(tables), dtype=np.intp) * width, sizes)
    for a in (caps, lhi, inside, cap, offset):
        a.setflags(write=False)
    return caps, width, lhi, inside, cap, offset, np.cumsum((0,) + sizes).tolist()


def _binned_bounds(flat: np.ndarray, sizes: tuple[int, ...], channels: tuple[int, ...]) -> list[float]:
    """`_binned_bound` of every scale at once: flat holds the scales' levels one after the other
    (`_levels_all`'s buffer), sizes[s] of them for scale s. One histogram for all scales, so a
    part costs a dozen numpy calls whatever the number of scales (plus a small sort per scale
    that has levels past its last bin)."""
    caps, width, lhi, inside, cap, offset, starts = _binned_plan(sizes, channels)
    n = len(sizes)
    j = np.minimum(np.sqrt(flat) * (1.0 / _BIN_U), cap).astype(np.intp)  # clipped first: Z may be 1e300
    counts = np.bincount(j + offset, minlength=n * width).reshape(n, width)
    k = np.cumsum(counts[:, ::-1], axis=1)[:, ::-1]  # K_j: pixels of the scale in bins >= j
    lows = np.where((counts > 0) & inside, k * lhi, np.inf).min(axis=1).tolist()
    out = []
    for s, (low, past) in enumerate(zip(lows, counts[np.arange(n), caps].tolist())):
        if past:  # pixels past the last bin are the scale's highest levels (sqrt is monotone)
            lo, hi = starts[s], starts[s + 1]
            top = flat[lo:hi][j[lo:hi] == caps[s]]
            low = min(low, float(np.min(_bound_terms(top, channels[s]))))
        out.append(max(low, _LOG_FLOOR) if low != math.inf else 0.0)
    return out


def _tree_log10_prob(zsq: np.ndarray, channels: int) -> np.ndarray:
    """(H, W) map: log10 P of the final U-Flow region containing each pixel, 0 outside regions."""
    f = _levels(zsq)
    return _tree_from_levels(f, *np.shape(_as_hw(zsq)), channels)


def _tree_from_levels(f: np.ndarray, h: int, w: int, channels: int, order: np.ndarray | None = None,
                      keep: int | None = None) -> np.ndarray:
    """The scale's (h, w) log10 P map. keep: build only the max-tree of the upper level set made of
    the first `keep` pixels in processing order (a forest: one root per component); see
    `tree_nfa_screened` for when that gives the full tree's significant regions exactly.

    Everything below works on ranks (position in processing order, 0 = highest level) of the
    pixels taken, so a defect's few-pixel level set costs a few-pixel tree, not the whole map's."""
    n = h * w
    if order is None:
        order = np.argsort(-f, kind="stable")  # processing order: decreasing Z
    if keep is not None and keep < n:
        order = order[:keep]
    m = order.size
    rank = np.full(n + 1, m, dtype=np.intp)  # pixels left out, and the sentinel, are never "processed before"
    rank[order] = np.arange(m)
    fr = f[order]  # levels by rank, decreasing

    # Each 4-neighbour edge is handled when its later-processed end p is processed; listing the
    # edges by rank of p gives Berger's max-tree algorithm as a flat loop over edges.
    nbr = rank[_grid_neighbours(h, w)[order]]  # (m, 4) neighbour ranks, rows in processing order
    earlier = nbr < np.arange(m)[:, None]
    ep_l = np.nonzero(earlier)[0].tolist()
    eq_l = nbr[earlier].tolist()

    # Union-find by size with path halving; rep[root] is the component's latest pixel (its
    # max-tree node), which is what parent links point to (Berger et al. 2007, with union by rank).
    parent = list(range(m))
    zpar = list(range(m))
    size = [1] * m
    rep = list(range(m))
    area = [1] * m
    last = zp = -1
    for p, q in zip(ep_l, eq_l):
        if p != last:
            last = zp = p
        r = zpar[q]
        if r != q:
            rr = zpar[r]
            while rr != r:  # path halving
                zpar[q] = rr
                q = r
                r = rr
                rr = zpar[r]
        if r != zp:
            c = rep[r]
            parent[c] = p
            area[p] += area[c]
            if size[r] > size[zp]:
                zpar[zp] = r
                size[r] += size[zp]
                zp = r
            else:
                zpar[r] = zp
                size[zp] += size[r]
            rep[zp] = p

    ids = np.arange(m)
    par = np.array(parent, dtype=np.intp)
    is_root = par == ids  # the whole grid: one root (the last pixel); a level set: one per component
    # Canonicalise (ties): every pixel must point to the level root of its parent's level component.
    pp = par[par]
    if np.any((fr[pp] == fr[par]) & (pp != par)):
        fl = fr.tolist()
        for x in range(m - 1, -1, -1):
            q = parent[x]
            if fl[parent[q]] == fl[q]:
                parent[x] = parent[q]
        par = np.array(parent, dtype=np.intp)
    canon = (fr[par] != fr) | is_root

    nodes = np.flatnonzero(canon)  # canonical ranks, decreasing level (children first)
    area_a = np.array(area, dtype=np.float64)
    lp_node = np.zeros(m, dtype=np.float64)
    lp_node[nodes] = np.maximum(area_a[nodes] * _chi2_table(channels)(fr[nodes]), _LOG_FLOOR)
    node_par = par[nodes]
    not_root = ~is_root[nodes]
    nchild = np.bincount(node_par[not_root], minlength=m)

    # Prune/merge to the fixed point, as one bottom-up pass: a subtree either collapses to one
    # leaf (its branch's most significant node, or a bifurcation that won its merge), or it is
    # final (then its collapsed children are final regions and nothing above can merge through it).
    lp = lp_node.tolist()
    nch = nchild.tolist()
    par_l = par.tolist()
    ncoll = [0] * m
    cmin = [math.inf] * m
    cbest = [0] * m
    best = [-1] * m  # -1: subtree not collapsible
    for v in nodes.tolist():
        nc = nch[v]
        if nc == 0:
            b = v
        elif ncoll[v] < nc:
            continue
        elif nc == 1:
            b = cbest[v]
            if lp[v] < lp[b]:
                b = v
        elif lp[v] <= cmin[v]:
            b = v
        else:
            continue
        best[v] = b
        u = par_l[v]
        if u != v:
            ncoll[u] += 1
            lb = lp[b]
            if lb < cmin[u]:
                cmin[u] = lb
            cbest[u] = b

    best_a = np.array(best, dtype=np.intp)
    coll = best_a >= 0
    final_src = nodes[coll[nodes] & (is_root[nodes] | ~coll[node_par])]
    is_final = np.zeros(m, dtype=bool)
    is_final[best_a[final_src]] = True

    # Rank -> nearest final ancestor-or-self (pointer doubling), else none.
    stop = is_final | is_root
    jump = np.where(stop, ids, par)
    while True:
        nxt = jump[jump]
        if np.array_equal(nxt, jump):
            break
        jump = nxt
    out = np.zeros(n, dtype=np.float64)  # pixels left out of the level set: in no region
    out[order] = np.where(is_final[jump], lp_node[jump], 0.0)
    return out.reshape(h, w)


def _prep_scales(maps: Sequence[np.ndarray], channels: Sequence[int]) -> list[np.ndarray]:
    maps = [_as_hw(m) for m in maps]
    if len(maps) != len(channels) or not maps:
        raise ValueError("need one channel count per scale, and at least one scale")
    return maps


def tree_nfa(
    zsq: Sequence[np.ndarray],
    channels: Sequence[int],
    out_size: tuple[int, int],
    epsilon: float = 0.0,
    upsample: str = "nearest",
) -> NFAResult:
    """U-Flow tree NFA from per-scale Z_s = sum_c z_c^2 maps (see module docstring)."""
    maps = _prep_scales(zsq, channels)
    out_size = (int(out_size[0]), int(out_size[1]))
    per = [_tree_log10_prob(m, int(c)) for m, c in zip(maps, channels)]
    total = _combine(per, out_size, upsample, np.minimum)
    total += np.float32(log10_n_tests_total([m.shape for m in maps]))
    return _finish(total, per, out_size, upsample, epsilon)


def tree_nfa_screened(
    zsq: Sequence[np.ndarray],
    channels: Sequence[int],
    out_size: tuple[int, int],
    epsilon: float = 0.0,
    upsample: str = "nearest",
    need_min: bool = True,
) -> tuple[NFAResult | None, float]:
    """`tree_nfa` for a decision, skipping the trees that provably cannot matter.

    First a sort-free bound (`_binned_bound`, the levels binned by sqrt(Z)): with need_min=False a
    scale it clears needs no sort and no tree (when it clears every scale, nothing else runs). For
    the other scales, a lower bound B_s on every value of
    its log10 P map (`_tree_bound`: K_k L(f_k), one sort and one table lookup) says, before building the tree, whether the scale can put any
    pixel below epsilon (B_s + log10 N_test < epsilon, in the float32 arithmetic of the map) and
    whether it can lower the map's minimum. Scales are built in order of increasing B_s; a scale
    that can do neither is not built (its map is replaced by the constant B_s).

    Returns (result, lower_bound) where lower_bound = min_s B_s + log10 N_test <= every value of
    the exact map.

    need_min=False (the decision): only the upper level sets that can hold a significant node are
    built; returns (None, lower_bound) when no region exists, else a result whose mask, regions
    (areas, boxes, values, scales) and min_log10_nfa equal tree_nfa's exactly (the map may
    differ from tree_nfa's where it is not below epsilon).

    need_min=True: whole trees for the scales that can reach epsilon or lower the minimum;
    result.mask, result.regions and result.min_log10_nfa equal tree_nfa's exactly; the map itself
    is exact where it is below epsilon and at its minimum, and may be lower (never below epsilon)
    elsewhere. NaN raises ValueError like tree_nfa.
    """
    maps = _prep_scales(zsq, channels)
    out_size = (int(out_size[0]), int(out_size[1]))
    chans = [int(c) for c in channels]
    flat, levels = _levels_all(maps)
    log_n = np.float32(log10_n_tests_total([m.shape for m in maps]))
    eps = np.float32(epsilon)

    def on_map(b: float) -> np.float32:  # a per-scale bound as the float32 map value it bounds
        return np.float32(np.float32(b) + log_n)

    # need_min=False: a scale that the sort-free bound clears needs neither a sort nor a tree (most
    # good parts: every scale; a defect: the scales it does not reach). need_min=True sorts them all.
    if need_min:
        quick = [None] * len(levels)
    else:
        quick = _binned_bounds(flat, tuple(f.size for f in levels), tuple(chans))
    pre = [b is not None and bool(on_map(b) >= eps) for b in quick]  # None: need_min, no pre-screen
    if all(pre):
        return None, float(on_map(min(quick)))
    orders = [None if p else np.argsort(-f, kind="stable") for f, p in zip(levels, pre)]
    terms = [None if p else _bound_terms(f, c, o) for f, c, o, p in zip(levels, chans, orders, pre)]
    bounds = [b if p else _bound_of(t) for b, t, p in zip(quick, terms, pre)]
    clear = [p or bool(on_map(b) >= eps) for b, p in zip(bounds, pre)]
    lower = float(on_map(min(bounds)))
    if not need_min:
        if all(clear):
            return None, lower
        # Only the significant regions matter here, and a node at level f_k has log10 P >= K_k L(f_k):
        # below the lowest level whose term can reach epsilon every node is insignificant. The
        # max-tree of the upper level set above that level has the full tree's nodes there, and its
        # pruning keeps the same significant regions (an insignificant node never wins a merge
        # against a significant child, nor replaces one on its branch). So only that level set is
        # built (a few pixels of a defect instead of the whole map); a pass then records the bound.
        slack = 1e-6 * (abs(float(log_n)) + abs(float(eps)) + 1.0)
        per = []
        for s, (f, t, o) in enumerate(zip(levels, terms, orders)):
            h, w = maps[s].shape
            if clear[s]:
                per.append(np.full((h, w), bounds[s]))
                continue
            hit = np.flatnonzero(t + (float(log_n) - slack * (1.0 + np.abs(t))) < float(eps))
            per.append(_tree_from_levels(f, h, w, chans[s], o, keep=int(hit[-1]) + 1).reshape(h, w))
        total = _combine(per, out_size, upsample, np.minimum)
        total += log_n
        res = _finish(total, per, out_size, upsample, epsilon)
        # no significant node: every value of the map is >= epsilon, whatever the bound said
        return (res, lower) if res.regions else (None, max(lower, float(eps)))
    per: list = [None] * len(maps)
    m32 = math.inf
    for s in sorted(range(len(maps)), key=lambda i: bounds[i]):
        h, w = maps[s].shape
        if clear[s] and float(np.float32(bounds[s])) >= m32:
            per[s] = np.full((h, w), bounds[s])
            continue
        per[s] = _tree_from_levels(levels[s], h, w, chans[s], orders[s]).reshape(h, w)
        m32 = min(m32, float(per[s].astype(np.float32).min()))
    total = _combine(per, out_size, upsample, np.minimum)
    total += log_n
    return _finish(total, per, out_size, upsample, epsilon), lower


def tree_nfa_from_latent(
    latents: Sequence[np.ndarray],
    out_size: tuple[int, int],
    epsilon: float = 0.0,
    upsample: str = "nearest",
) -> NFAResult:
    zs = [_as_chw(z).astype(np.float64, copy=False) for z in latents]
    return tree_nfa(
        [np.einsum("chw,chw->hw", z, z) for z in zs], [z.shape[0] for z in zs], out_size,
        epsilon, upsample,
    )


# --------------------------------------------------------------------------- window NFA


def _box_sum_reflect(a: np.ndarray, half: int) -> np.ndarray:
    """Sum over the (2 half + 1)^2 window with reflect-101 padding (n pixels per window)."""
    h, w = a.shape
    pad = np.pad(a.astype(np.int64), half, mode="reflect")
    ii = np.zeros((pad.shape[0] + 1, pad.shape[1] + 1), dtype=np.int64)
    np.cumsum(np.cumsum(pad, axis=0), axis=1, out=ii[1:, 1:])
    k = 2 * half + 1
    return ii[k:, k:] - ii[:-k, k:] - ii[k:, :-k] + ii[:-k, :-k]


def _window_halves(window, shapes) -> list[int]:
    if isinstance(window, (int, np.integer)):
        w_fine = max(s[1] for s in shapes)
        return [max(1, int(int(window) * s[1] / w_fine) // 2) for s in shapes]
    halves = [int(v) // 2 for v in window]
    if len(halves) != len(shapes) or min(halves) < 1:
        raise ValueError("window: one size >= 3 per scale, or a single int")
    return halves


def window_nfa(
    counts: Sequence[np.ndarray],
    channels: Sequence[int],
    out_size: tuple[int, int],
    window: int | Sequence[int] = 5,
    p: float = 0.9,
    epsilon: float = 0.0,
    upsample: str = "bilinear",
) -> NFAResult:
    """Window (binomial) NFA from per-scale exceedance counts (see module docstring)."""
    maps = _prep_scales(counts, channels)
    out_size = (int(out_size[0]), int(out_size[1]))
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    halves = _window_halves(window, [m.shape for m in maps])
    per = []
    for m, c, half in zip(maps, channels, halves):
        c = int(c)
        half = min(half, m.shape[0] - 1, m.shape[1] - 1)  # reflect padding needs half < size
        if half < 1:  # n = 1 degenerates: ceil(K / C) >= 1 as soon as one channel exceeds tau
            raise ValueError(f"window NFA needs every scale at least 2x2, got {m.shape}")
        n = (2 * half + 1) ** 2
        k_sum = _box_sum_reflect(np.asarray(m), half)
        x = np.clip(-(-k_sum // c), 0, n)  # ceil(K / C)
        per.append(log10_binom_sf_table(n, 1.0 - p)[x])
    total = _combine(per, out_size, upsample, np.add)
    total += np.float32(math.log10(sum(m.shape[0] * m.shape[1] for m in maps)))
    return _finish(total, per, out_size, upsample, epsilon)


def window_nfa_from_latent(
    latents: Sequence[np.ndarray],
    out_size: tuple[int, int],
    window: int | Sequence[int] = 5,
    p: float = 0.9,
    epsilon: float = 0.0,
    upsample: str = "bilinear",
) -> NFAResult:
    zs = [_as_chw(z) for z in latents]
    return window_nfa(
        [exceedance_counts(z, p) for z in zs], [z.shape[0] for z in zs], out_size, window, p,
        epsilon, upsample,
    )
