"""Turn one inference into a verdict. A part that could not be inspected is rejected.

Two rules, chosen by the config key ``decision``:

* ``score``: reject when the image score is at or above the IR's calibrated image threshold;
* ``nfa``: segment the part with the tree NFA on the per-scale Σ_c z² maps
  (`edge.nfa.tree_nfa`) and reject when any region has log10 NFA < ε;
* ``both`` (default): reject when either fires. The record's ``rule`` says which fired
  (``score``, ``nfa``, ``score+nfa``, ``failsafe``, or ``none`` for a pass).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

REJECT = "reject"
PASS = "pass"
RULES = ("nfa", "score", "both")


@dataclass
class Decision:
    frame: int
    origin: str
    captured_at: float
    decided_at: float
    verdict: str
    reason: str
    score: float | None
    threshold: float
    latency_ms: float
    model_hash: str
    rule: str = "none"
    log10_nfa: float | None = None
    nfa_epsilon: float | None = None
    regions: list = field(default_factory=list)
    log10_nfa_bound: float | None = None  # set when the tree was skipped: every region's log10 NFA >= this

    @property
    def reject(self) -> bool:
        return self.verdict == REJECT

    @property
    def failsafe(self) -> bool:
        return self.rule == "failsafe"

    def record(self) -> dict:
        out = {"frame": self.frame, "origin": self.origin, "captured_at": round(self.captured_at, 6),
               "decided_at": round(self.decided_at, 6), "verdict": self.verdict, "reason": self.reason,
               "score": self.score, "threshold": self.threshold, "latency_ms": round(self.latency_ms, 3),
               "model_hash": self.model_hash, "rule": self.rule, "log10_nfa": self.log10_nfa,
               "nfa_epsilon": self.nfa_epsilon, "regions": self.regions}
        if self.log10_nfa_bound is not None:
            out["log10_nfa_bound"] = round(self.log10_nfa_bound, 3)
        if self.score is not None:
            out["score"] = round(self.score, 6) if math.isfinite(self.score) else str(self.score)
        if self.log10_nfa is not None:
            out["log10_nfa"] = round(self.log10_nfa, 3) if math.isfinite(self.log10_nfa) else str(self.log10_nfa)
        return out


def verdict_for_score(score: float, threshold: float) -> tuple[str, str]:
    """Reject at or above the calibrated image threshold; a NaN score is never a pass."""
    if score != score:  # NaN
        return REJECT, "failsafe: score is NaN"
    if score >= threshold:
        return REJECT, "score >= image_threshold"
    return PASS, "score < image_threshold"


@dataclass
class Verdict:
    verdict: str
    reason: str
    rule: str
    log10_nfa: float | None = None
    regions: list = field(default_factory=list)
    log10_nfa_bound: float | None = None


def failsafe(reason: str) -> Verdict:
    return Verdict(REJECT, f"failsafe: {reason}", "failsafe")


def decide(score: float, zsq, *, rule: str, threshold: float, epsilon: float, channels, size: tuple[int, int],
           top: int = 3, null_scale=None, exact_min: bool = False) -> Verdict:
    """Apply the configured rule(s). Anything that cannot be evaluated is a fail-safe reject.

    The NFA rule builds only the max-trees that can matter (`edge.nfa.tree_nfa_screened`): the
    verdict, the regions and, when there are regions, the worst log10 NFA are always exact. When a
    cheap bound proves that no region can exist, the trees are skipped and the pass records the
    bound (`log10_nfa_bound`) instead of the minimum (`log10_nfa` None); exact_min=True builds
    them anyway to report the exact minimum on every part."""
    from .nfa import tree_nfa_screened

    if score != score:
        return failsafe("score is NaN")
    fired = []
    reasons = []
    log10_nfa = None
    bound = None
    regions: list = []
    if rule in ("score", "both"):
        if score >= threshold:
            fired.append("score")
            reasons.append(f"score {score:.4g} >= image_threshold {threshold:.4g}")
    if rule in ("nfa", "both"):
        # With nearest upsampling and an input that is a whole multiple of the finest latent map,
        # the map at input size is that map's blocks: segment at latent size (the same regions,
        # minimum and labels, ~2 ms cheaper per part at 256 px) and scale bbox and area exactly.
        fine = min((np.shape(z)[-2:] for z in zsq), key=lambda s: -s[0] * s[1]) if zsq else size
        fy, fx = (size[0] // fine[0], size[1] // fine[1]) if fine[0] and fine[1] else (0, 0)
        exact = fy and fx and fy * fine[0] == size[0] and fx * fine[1] == size[1]
        out = (int(fine[0]), int(fine[1])) if exact else size
        if null_scale:  # H0 calibrated on held-out good parts: z ~ N(0, s·I) per scale
            zsq = [np.asarray(z) / s for z, s in zip(zsq, null_scale)]
        try:
            result, bound = tree_nfa_screened(zsq, channels, out, epsilon, need_min=exact_min)
        except ValueError as err:  # NaN in the latents, scale/channel mismatch
            return failsafe(f"NFA cannot be computed ({err})")
        if result is not None:
            bound = None
            log10_nfa = result.min_log10_nfa
            if not math.isfinite(log10_nfa) and log10_nfa > 0:
                return failsafe("NFA map is empty")
        elif not bound >= epsilon:  # pragma: no cover - tree_nfa_screened only skips when this holds
            return failsafe("NFA bound inconsistent")
        sy, sx = (fy, fx) if exact else (1, 1)
        regions = [] if result is None else [{"area": int(r.area) * sy * sx,
                    "bbox": [int(r.bbox[0]) * sx, int(r.bbox[1]) * sy, int(r.bbox[2]) * sx, int(r.bbox[3]) * sy],
                    "log10_nfa": round(float(r.log10_nfa), 3)}
                   for r in result.regions[:top]]
        if result is not None and result.regions:
            fired.append("nfa")
            reasons.append(f"{len(result.regions)} region(s) with log10 NFA < {epsilon:g} (worst {log10_nfa:.4g})")
    if fired:
        return Verdict(REJECT, "; ".join(reasons), "+".join(fired), log10_nfa, regions, bound)
    ok = []
    if rule in ("score", "both"):
        ok.append(f"score {score:.4g} < image_threshold {threshold:.4g}")
    if rule in ("nfa", "both"):
        if log10_nfa is None:
            ok.append(f"no region with log10 NFA < {epsilon:g} (all >= {bound:.4g})")
        else:
            ok.append(f"no region with log10 NFA < {epsilon:g} (min {log10_nfa:.4g})")
    return Verdict(PASS, "; ".join(ok), "none", log10_nfa, regions, bound)


def check_nfa_ready(rule: str, channels, n_scales: int) -> str | None:
    """Why the NFA rule cannot run on this IR, or None."""
    if rule not in ("nfa", "both"):
        return None
    if not channels:
        return "the IR has no latent_channels metadata, which the NFA rule needs: re-export it with edge-calibrate or set decision = \"score\""
    if len(channels) != n_scales:
        return (f"the IR lists {len(channels)} latent_channels but outputs {n_scales} zsq maps: re-export it with "
                "edge-calibrate or set decision = \"score\"")
    return None


__all__ = ["Decision", "Verdict", "REJECT", "PASS", "RULES", "decide", "failsafe", "verdict_for_score", "check_nfa_ready"]
