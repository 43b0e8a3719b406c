"""``archscreen plot STUDY -o study.png``: a study's curves, posterior, ranking and tuning in one image."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from archscreen.client import Client


def plot_study(client: Client, study_id: int, out: Path, *, max_candidates: int = 12) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = client.summary(study_id)
    details = [client.candidate(c.id) for c in summary.candidates[:max_candidates]]
    tuning = [client.tuning_job(j.id) for j in summary.tuning_jobs[:max_candidates]]
    ranking = summary.ranking
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    (ax_loss, ax_acc), (ax_post, ax_rank) = axes
    for d in details:
        curves = d.runs[0].curves if d.runs else []
        ep = [p.epoch for p in curves]
        ax_loss.plot(ep, [p.val_loss for p in curves], marker="o", ms=3, label=d.name)
        if any(p.val_accuracy is not None for p in curves):
            ax_acc.plot(ep, [p.val_accuracy for p in curves], marker="o", ms=3, label=d.name)
    ax_loss.set(title="validation loss", xlabel="epoch", ylabel="val loss")
    ax_acc.set(title="validation accuracy", xlabel="epoch", ylabel="val accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)

    best = ranking.data[0].candidate_id if ranking.data else None
    post_of = next((d for d in details if d.id == best and d.switch_posterior), None)
    if post_of is not None and post_of.switch_posterior:
        post = post_of.switch_posterior
        ax_post.bar(range(len(post)), [e["weight"] for e in post], color="#3459d6")
        ax_post.set_xticks(range(len(post)), [f"{e['lr']:.0e}" for e in post], rotation=45, fontsize=8)
        ax_post.set(
            title=f"Switch posterior of {post_of.name} (preferred lr {post_of.preferred_lr:.3g})",
            xlabel="learning rate of the output copy",
            ylabel="posterior weight",
        )
    else:
        ax_post.text(0.5, 0.5, "no finished candidate yet", ha="center", va="center")
        ax_post.set_axis_off()

    rows = ranking.data
    if rows:
        names = [f"{r.rank}. {r.name}" for r in rows][::-1]
        scores = [r.score for r in rows][::-1]
        errs = [r.score_std or 0 for r in rows][::-1]
        ax_rank.barh(names, scores, xerr=errs, color="#1e8e4f", alpha=0.8)
        tuned = [(i, r.tuned_score) for i, r in enumerate(rows[::-1]) if r.tuned_score is not None]
        if tuned:
            ax_rank.scatter(
                [t for _, t in tuned], [i for i, _ in tuned], color="#d6336c", zorder=3, label="tuned"
            )
            ax_rank.legend(fontsize=8)
        order = "higher" if ranking.higher_is_better else "lower"
        ax_rank.set(title=f"ranking by {ranking.metric} ({order} is better)", xlabel=ranking.metric)
    else:
        ax_rank.text(0.5, 0.5, "no ranking yet", ha="center", va="center")
        ax_rank.set_axis_off()
    if tuning:
        inset = ax_post.inset_axes((0.62, 0.55, 0.36, 0.4)) if post_of is not None else ax_post
        for j in tuning:
            traj: list[Any] = (j.result or {}).get("trajectory") or []
            if traj:
                inset.plot([p[0] for p in traj], [p[1] for p in traj], lw=1, label=f"job {j.id}")
        inset.set_yscale("log")
        inset.set_title("tuned lr trajectories", fontsize=8)
        inset.tick_params(labelsize=7)
    fig.suptitle(f"study {summary.study.id} {summary.study.name!r} on {summary.study.dataset}")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
