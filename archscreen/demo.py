"""``archscreen up --demo``: a small example study so a new user sees the service work."""

from __future__ import annotations

import sys

from archscreen.client import ApiError, Client

LOGREG = "name: logistic-regression\nlayers: [flatten]\nhead: classifier\n"
MLP = "name: mlp-64\nlayers: [flatten, {linear: 64}, relu]\nhead: classifier\n"
CNN = (
    "name: cnn-small\nlayers:\n  - conv1d: {out: 16, kernel: 5, padding: 2}\n  - relu\n"
    "  - maxpool1d: 2\n  - flatten\n  - linear: 64\n  - relu\nhead: classifier\n"
)


def submit_demo(url: str, token: str, name: str = "demo") -> int:
    with Client(url, token) as c:
        study = c.study_by_name(name)
        if study is None:
            study = c.create_study(
                name,
                dataset="mnist1d",
                screening=None,  # the service's defaults (ScreeningConfig): what a user gets
                policy={"top_k": 2, "auto": True},
            )
        try:
            added = c.add_candidates(study.id, [{"spec": s} for s in (LOGREG, MLP, CNN)])
        except ApiError as exc:
            print(f"demo: {exc}", file=sys.stderr)
            return study.id
    names = ", ".join(a.name for a in added)
    print(f"demo: study {study.id} ({name!r}) screening {names} on mnist1d", flush=True)
    print(
        f"demo: follow it with  curl -H 'Authorization: Bearer {token}' "
        f"{url}/api/v1/studies/{study.id}/candidates",
        flush=True,
    )
    return study.id
