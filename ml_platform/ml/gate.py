"""The promotion gate: which candidate is best, and whether it may become champion."""

import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Decision:
    best: str
    best_auc: float
    promote: bool
    champion_auc: float | None
    reasons: list[str] = field(default_factory=list)

    @property
    def alias(self) -> str:
        return "champion" if self.promote else "challenger"


def decide(candidate_aucs: dict[str, float], champion_auc: float | None, floor: float) -> Decision:
    """Best holdout AUC wins; it is promoted only if it clears the floor and is not worse than
    the current champion scored on the same holdout."""
    valid = {k: v for k, v in candidate_aucs.items() if v is not None and not math.isnan(v)}
    if not valid:
        raise ValueError("no candidate has a holdout AUC; the holdout may hold a single class")
    best = max(sorted(valid), key=lambda k: valid[k])
    auc = valid[best]
    reasons = [f"best candidate {best} has holdout AUC {auc:.4f}"]
    promote = True
    if auc < floor:
        promote = False
        reasons.append(f"AUC {auc:.4f} is below the floor {floor:.4f}")
    else:
        reasons.append(f"AUC {auc:.4f} clears the floor {floor:.4f}")
    if champion_auc is None:
        reasons.append("there is no current champion")
    elif auc < champion_auc:
        promote = False
        reasons.append(
            f"current champion scores {champion_auc:.4f} on the same holdout, better than {auc:.4f}"
        )
    else:
        reasons.append(f"not worse than the current champion ({champion_auc:.4f}) on the same holdout")
    return Decision(best, auc, promote, champion_auc, reasons)
