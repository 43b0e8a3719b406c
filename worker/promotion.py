"""Automatic promotion: when a study's last screening run ends, its top-k become tuning jobs (once)."""

from __future__ import annotations

import logging

from archscreen.settings import Settings
from archscreen.store import Database, Study
from archscreen.store import ranking as ranking_store

log = logging.getLogger("archscreen.worker")


def after_screening_finished(db: Database, settings: Settings, study_id: int) -> list[int]:
    """Promote the study's top-k if its policy is ``auto`` and every screening run has ended.

    Exactly once even with several workers finishing at the same moment: the study row's
    ``auto_promoted_at`` is claimed by compare-and-set in the same transaction that creates
    the tuning jobs. Returns the new tuning job ids (already enqueued).
    """
    with db.session() as s:
        study = s.get(Study, study_id)
        if study is None or not study.policy.get("auto") or study.auto_promoted_at is not None:
            return []
        if not ranking_store.screening_done(s, study_id):
            return []
        if not ranking_store.claim_auto_promotion(s, study_id):
            return []
        ranked, _ = ranking_store.rank(s, study, study.policy.get("metric", "val_loss"))
        top = [r.candidate_id for r in ranked[: int(study.policy.get("top_k", 1))]]
        _, new = ranking_store.promote(
            s,
            study,
            top,
            tuner=study.policy.get("tuner", "fd2"),
            max_attempts=settings.max_attempts,
            skip_unpromotable=True,
        )
        new_ids = [(j.id, j.kind) for j in new]
    from archscreen.worker.queue import enqueue

    enqueue(db, settings, new_ids)
    log.info("study %s: auto-promoted candidates %s", study_id, top)
    return [i for i, _ in new_ids]
