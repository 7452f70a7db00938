"""Turn one inference into a verdict. A part that could not be inspected is rejected."""

from __future__ import annotations

from dataclasses import asdict, dataclass

REJECT = "reject"
PASS = "pass"


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

    @property
    def reject(self) -> bool:
        return self.verdict == REJECT

    def record(self) -> dict:
        out = asdict(self)
        out["latency_ms"] = round(self.latency_ms, 3)
        if self.score is not None:
            out["score"] = round(self.score, 6)
        return out


def verdict_for_score(score: float, threshold: float) -> tuple[str, str]:
    """Reject at or above the calibrated image threshold; a NaN score is never a pass."""
    if score != score:  # NaN
        return REJECT, "failsafe: score is NaN"
    if score >= threshold:
        return REJECT, "score >= image_threshold"
    return PASS, "score < image_threshold"
