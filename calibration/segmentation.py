"""Segmentation metrics for the a-contrario decision rule: mIoU at log10 NFA < eps, at the "fair" and at the
oracle threshold of the anomaly map, false-alarm regions per good image, and AUPRO.

Definitions (U-Flow's protocol, written from its description):

- **IoU of one image**: |P & G| / |P | G| of the predicted mask P and the ground-truth mask G; an image where
  both are empty scores 1 (a good part with no detection is segmented perfectly), a good part with any
  detection scores 0. **mIoU** = mean over ALL test images (good ones included, so false alarms cost);
  ``miou_defective`` is the same mean over defective images only.
- **NFA mask**: ``edge.nfa.tree_nfa(zsq, channels, out_size)``: log10 NFA < eps (eps = 0: at most one false
  detection per image on average under H0). No threshold is learned.
- **Fair threshold**: the anomaly-map value exceeded by a fraction 1 / (H W) of the pixels of good TRAINING
  images (about one false-positive pixel per image), as in U-Flow's comparison with FastFlow/CFlow/CS-Flow.
- **Oracle threshold**: the anomaly-map threshold with the best mIoU on the test set itself (an upper bound,
  not a usable rule); ``oracle_eps`` likewise for the log10 NFA map.
- **False-alarm regions per good image**: 8-connected components of the mask on good test images / their count.
- **AUPRO**: area under the per-region-overlap curve up to FPR 0.3, normalised by 0.3 (MVTec AD's definition):
  a private helper here until calibration/metrics.py has one.

NFA variants (``nfa_variant``): the tree NFA's test count grows like 0.609 H W per scale, so with few channels at
a fine scale it is nearly blind there. Summing Z over f x f blocks of one scale is exact under H0 (a sum of f^2
independent chi^2_C is chi^2_{f^2 C}) and lowers the resolution: ``pool=R`` sum-pools every scale finer than
R x R down to R x R (C -> f^2 C); ``drop_finest=k`` ignores the k finest scales. ``+cal_<method>`` first divides each zsq_s
by the null's variance estimated on held-out good images (``null_scale``): H0 becomes N(0, sigma_s^2 I).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np


# ----------------------------------------------------------------------------- masks and IoU


def iou_per_image(pred: np.ndarray, gt: np.ndarray) -> float:
    union = np.count_nonzero(pred | gt)
    if union == 0:
        return 1.0
    return float(np.count_nonzero(pred & gt) / union)


def _sorted_split(amap: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = amap.reshape(-1)
    g = gt.reshape(-1).astype(bool)
    return np.sort(a[g]), np.sort(a[~g])


def iou_curve(maps: Sequence[np.ndarray], gts: Sequence[np.ndarray], thresholds: np.ndarray,
              below: bool = False) -> np.ndarray:
    """Per-image IoU of (map > t) (or map < t with ``below``) for every threshold: (n_images, n_thresholds)."""
    t = np.asarray(thresholds, dtype=np.float64)
    out = np.empty((len(maps), t.size))
    for i, (amap, gt) in enumerate(zip(maps, gts)):
        pos, neg = _sorted_split(np.asarray(amap, dtype=np.float64), gt)
        if below:
            tp = np.searchsorted(pos, t, side="left")
            fp = np.searchsorted(neg, t, side="left")
        else:
            tp = pos.size - np.searchsorted(pos, t, side="right")
            fp = neg.size - np.searchsorted(neg, t, side="right")
        union = pos.size + fp
        out[i] = np.where(union == 0, 1.0, tp / np.maximum(union, 1))
    return out


def candidate_thresholds(maps: Sequence[np.ndarray], n: int = 256, lo_q: float = 0.5) -> np.ndarray:
    """Quantiles of the pooled map values (from the median up, denser near the top)."""
    values = np.concatenate([np.asarray(m, dtype=np.float32).reshape(-1)[::7] for m in maps])
    qs = 1.0 - (1.0 - lo_q) * np.geomspace(1.0, 1e-6, n)
    return np.unique(np.quantile(values, np.clip(qs, 0, 1)))


def fair_threshold(good_maps: Sequence[np.ndarray], fpr: float | None = None) -> float:
    """Threshold exceeded by at most a fraction `fpr` (default 1 / (H W)) of the good pixels."""
    h, w = np.asarray(good_maps[0]).shape[-2:]
    fpr = 1.0 / (h * w) if fpr is None else fpr
    n_pix = sum(np.asarray(m).size for m in good_maps)
    k = int(np.floor(fpr * n_pix))  # pixels allowed above the threshold
    # the (k+1)-th largest value: at most k pixels are strictly above it
    tops = np.concatenate([np.partition(np.asarray(m, dtype=np.float64).reshape(-1), -min(k + 1, np.asarray(m).size))
                           [-min(k + 1, np.asarray(m).size):] for m in good_maps])
    return float(np.sort(tops)[-(k + 1)])


def count_regions(mask: np.ndarray) -> int:
    """8-connected components of a boolean mask."""
    if not mask.any():
        return 0
    from scipy import ndimage

    return int(ndimage.label(mask, structure=np.ones((3, 3), dtype=int))[1])


# ----------------------------------------------------------------------------- AUPRO


def aupro(masks: Sequence[np.ndarray], maps: Sequence[np.ndarray], max_fpr: float = 0.3) -> float:
    """Area under the PRO curve up to `max_fpr`, divided by `max_fpr` (MVTec AD's per-region overlap).

    Exact in the scores (one sort of all pixels): each ground-truth pixel weighs 1 / (area of its 8-connected
    region * number of regions), so the cumulative weight above a threshold is the mean region overlap.
    """
    from scipy import ndimage

    scores, weights, negatives = [], [], []
    n_regions = 0
    per_image = []
    for gt, amap in zip(masks, maps):
        gt = np.asarray(gt, dtype=bool)
        lab, n = ndimage.label(gt, structure=np.ones((3, 3), dtype=int))
        per_image.append((lab, n, np.asarray(amap, dtype=np.float32)))
        n_regions += n
    if n_regions == 0:
        return float("nan")
    for lab, n, amap in per_image:
        a = amap.reshape(-1)
        l = lab.reshape(-1)
        if n:
            area = np.bincount(l, minlength=n + 1).astype(np.float64)
            w = np.where(l > 0, 1.0 / (area[l] * n_regions), 0.0)
        else:
            w = np.zeros(a.size)
        scores.append(a)
        weights.append(w)
        negatives.append(l == 0)
    s = np.concatenate(scores)
    w = np.concatenate(weights)
    neg = np.concatenate(negatives)
    order = np.argsort(-s, kind="stable")
    s, w, neg = s[order], w[order], neg[order]
    # one point per distinct score (ties enter together)
    last = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]
    fpr = np.cumsum(neg)[last] / max(1, neg.sum())
    pro = np.cumsum(w)[last]
    fpr = np.r_[0.0, fpr]
    pro = np.r_[0.0, pro]
    cut = np.searchsorted(fpr, max_fpr, side="right")
    x, y = fpr[:cut], pro[:cut]
    if cut < fpr.size:  # interpolate the point at max_fpr
        x0, x1, y0, y1 = fpr[cut - 1], fpr[cut], pro[cut - 1], pro[cut]
        y_end = y0 + (y1 - y0) * (max_fpr - x0) / max(x1 - x0, 1e-300)
        x, y = np.r_[x, max_fpr], np.r_[y, y_end]
    return float(np.trapezoid(y, x) / max_fpr)


# ----------------------------------------------------------------------------- NFA


def sum_pool(zsq: np.ndarray, f: int) -> np.ndarray:
    """Sum of Z over f x f blocks (the dims must divide)."""
    h, w = zsq.shape
    if h % f or w % f:
        raise ValueError(f"a {h}x{w} map cannot be pooled by {f}")
    return zsq.reshape(h // f, f, w // f, f).sum(axis=(1, 3))


def pool_factor(h: int, w: int, pool: int) -> int:
    """The block size that brings an h x w map nearest to `pool` rows while dividing both sides exactly
    (so the pooled map still covers the whole image): a divisor of gcd(h, w), 1 when none is closer.
    Square power-of-two grids get h // pool; a 20x15 grid (320x240 input at stride 16) gets 1 for pool 8."""
    from math import gcd

    g, target = gcd(h, w), h / pool
    return min((d for d in range(1, g + 1) if g % d == 0), key=lambda d: (abs(d - target), d))


def nfa_variant(zsq: Sequence[np.ndarray], channels: Sequence[int], pool: int | None = None,
                drop_finest: int = 0) -> tuple[list[np.ndarray], list[int]]:
    """(maps, channels) after pooling fine scales to `pool` x `pool` and dropping the `drop_finest` finest."""
    items = sorted(((np.asarray(q, dtype=np.float64).reshape(q.shape[-2:]), int(c)) for q, c in zip(zsq, channels)),
                   key=lambda qc: -qc[0].size)
    items = items[drop_finest:]
    out_q, out_c = [], []
    for q, c in items:
        if pool and q.shape[0] > pool:
            f = pool_factor(*q.shape, pool)
            q, c = sum_pool(q, f), c * f * f
        out_q.append(q.astype(np.float32))
        out_c.append(c)
    return out_q, out_c


VARIANTS = {
    "all": {},
    "pool16": {"pool": 16},
    "pool8": {"pool": 8},
    "drop_finest": {"drop_finest": 1},
}


def null_scale(good_zsq: Sequence[Sequence[np.ndarray]], channels: Sequence[int], method: str = "q999") -> list[float]:
    """Per-scale variance factor sigma_s^2 of the latent on held-out good images (H0: z ~ N(0, sigma_s^2 I)).

    A flow's latent on good images it never saw is often wider than N(0, I) (a generalisation gap), and the tree
    NFA then fires on good parts. Estimating the null's scale on held-out good images keeps the a-contrario
    rule free of a hand-tuned threshold: ``mean``: sigma^2 = mean(Z) / C; ``q999``: sigma^2 = empirical 0.999
    quantile of Z / chi^2_C 0.999 quantile (matches the tail the detector looks at). Never below 1.
    """
    from scipy.stats import chi2

    out = []
    for i, c in enumerate(channels):
        z = np.concatenate([np.asarray(q[i], dtype=np.float64).reshape(-1) for q in good_zsq])
        if method == "mean":
            s = z.mean() / c
        elif method == "q999":
            s = np.quantile(z, 0.999) / chi2.ppf(0.999, c)
        else:
            raise ValueError(f"unknown null-scale method {method!r}")
        out.append(float(max(1.0, s)))
    return out


def nfa_map(zsq: Sequence[np.ndarray], channels: Sequence[int], out_size: tuple[int, int], variant: str = "all",
            epsilon: float = 0.0, scale: Sequence[float] | None = None):
    """edge.nfa.tree_nfa on the chosen variant (``name`` or ``name+cal_<method>``, the latter with ``scale``
    from null_scale dividing each zsq_s first); returns the NFAResult."""
    from edge.nfa import tree_nfa

    base, _, cal = variant.partition("+")
    if cal:
        if scale is None:
            raise ValueError(f"variant {variant} needs the null scale of each latent")
        zsq = [np.asarray(q, dtype=np.float32) / np.float32(f) for q, f in zip(zsq, scale)]
    q, c = nfa_variant(zsq, channels, **VARIANTS[base])
    return tree_nfa(q, c, out_size, epsilon=epsilon)


# ----------------------------------------------------------------------------- the whole evaluation


@dataclass
class SegmentationResult:
    n_images: int
    n_good: int
    fair_threshold: float
    miou_fair: float
    miou_fair_defective: float
    fair_false_alarm_regions_per_good: float
    oracle_threshold: float
    miou_oracle: float
    pixel_auroc: float
    aupro: float
    nfa: dict = field(default_factory=dict)  # variant -> metrics


def evaluate_segmentation(test_maps: Sequence[np.ndarray], test_zsq: Sequence[Sequence[np.ndarray]],
                          gts: Sequence[np.ndarray], labels: Sequence[int], train_good_maps: Sequence[np.ndarray],
                          channels: Sequence[int], variants: Sequence[str] = ("all",), epsilon: float = 0.0,
                          nfa_timer=None, holdout_zsq: Sequence[Sequence[np.ndarray]] | None = None,
                          fixed_scales: dict[str, Sequence[float]] | None = None) -> SegmentationResult:
    """All segmentation metrics of one model on one test set (maps at the input size, zsq per scale).

    A variant ``name+cal_<method>`` divides zsq by the null scale estimated on `holdout_zsq`; ``name+<key>``
    with a key of `fixed_scales` uses that scale as given (e.g. the one stored in an IR's metadata)."""
    from .metrics import pixel_auroc

    labels = np.asarray(labels)
    gts = [np.asarray(g, dtype=bool) for g in gts]
    good = np.nonzero(labels == 0)[0]
    defective = labels == 1
    out_size = tuple(np.asarray(test_maps[0]).shape[-2:])

    thr = fair_threshold(train_good_maps)
    fair_iou = np.array([iou_per_image(np.asarray(m) > thr, g) for m, g in zip(test_maps, gts)])
    fair_fa = sum(count_regions(np.asarray(test_maps[i]) > thr) for i in good) / max(1, len(good))
    cands = candidate_thresholds(test_maps)
    curve = iou_curve(test_maps, gts, cands).mean(0)
    best = int(np.argmax(curve))

    nfa = {}
    scales = {k: list(v) for k, v in (fixed_scales or {}).items()}
    for variant in variants:
        cal = variant.partition("+")[2]
        if cal and cal not in scales:
            if not holdout_zsq:
                raise ValueError(f"variant {variant} needs holdout_zsq")
            scales[cal] = null_scale(holdout_zsq, channels, cal.removeprefix("cal_"))

        maps, fa, times = [], 0, []
        for i, zsq in enumerate(test_zsq):
            t0 = time.perf_counter()
            res = nfa_map(zsq, channels, out_size, variant, epsilon, scales.get(cal))
            times.append(time.perf_counter() - t0)
            maps.append(res.log10_nfa_map)
            if labels[i] == 0:
                fa += len(res.regions)
        ious = np.array([iou_per_image(m < epsilon, g) for m, g in zip(maps, gts)])
        eps_grid = np.array([-1e4, -3e3, -1e3, -300, -100, -30, -10, -3, -1, 0, 1, 3, 10, 30, 100, 300, 1e3])
        eps_curve = iou_curve(maps, gts, eps_grid, below=True).mean(0)
        k = int(np.argmax(eps_curve))
        flat_min = np.array([float(m.min()) for m in maps])
        nfa[variant] = {
            "miou": float(ious.mean()), "miou_defective": float(ious[defective].mean()) if defective.any() else None,
            "false_alarm_regions_per_good": fa / max(1, len(good)),
            "good_images_with_false_alarm": int(sum(flat_min[i] < epsilon for i in good)),
            "defective_images_detected": int(sum(flat_min[i] < epsilon for i in np.nonzero(defective)[0])),
            "oracle_eps": float(eps_grid[k]), "miou_oracle_eps": float(eps_curve[k]),
            "nfa_ms_median": 1e3 * float(np.median(times)), "nfa_ms_p99": 1e3 * float(np.percentile(times, 99)),
            "null_scale": scales.get(cal),
        }
        if nfa_timer is not None:
            nfa_timer(variant, times)
    return SegmentationResult(
        n_images=len(labels), n_good=len(good), fair_threshold=thr, miou_fair=float(fair_iou.mean()),
        miou_fair_defective=float(fair_iou[defective].mean()) if defective.any() else float("nan"),
        fair_false_alarm_regions_per_good=float(fair_fa), oracle_threshold=float(cands[best]),
        miou_oracle=float(curve[best]), pixel_auroc=pixel_auroc(gts, test_maps) if any(g.any() for g in gts) else float("nan"),
        aupro=aupro(gts, test_maps), nfa=nfa,
    )
