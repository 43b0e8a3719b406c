"""A typed Python client for the archscreen REST API (over httpx).

    from archscreen.client import Client

    with Client("http://127.0.0.1:8000", token) as c:
        study = c.create_study("widths", dataset="mnist1d", screening={"max_epochs": 10})
        c.add_candidates(study.id, [{"spec": open("mlp.yaml").read()}])
        c.wait(study.id)
        print(c.ranking(study.id).rows)

Every method returns the response as the API's own pydantic model (:mod:`archscreen.api.schemas`,
documented at ``/docs``: ``study.id``, ``row.state``); an HTTP error raises :class:`ApiError` with
the status and the server's ``detail``. The schemas need pydantic only: importing this module loads
neither FastAPI, SQLAlchemy, Celery nor torch (tests/archscreen/test_client_imports.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from archscreen.api.schemas import (
    CancelOut,
    CandidateDetail,
    CandidateOut,
    CandidateRow,
    DatasetOut,
    JobOut,
    LeaderboardOut,
    Page,
    RankingOut,
    SearchOut,
    SearchViewOut,
    StudyOut,
    StudySummary,
)
from archscreen.core.names import FINAL_STATES

# A job (or candidate) in one of these states will not change any more.
FINAL = frozenset(FINAL_STATES)
IDEMPOTENT_METHODS = {"GET", "HEAD", "PUT", "DELETE", "OPTIONS"}
RETRY_STATUSES = {502, 503, 504}
MAX_RETRY_WAIT_S = 10.0
M = TypeVar("M", bound=BaseModel)


def search_finished(s: SearchOut) -> bool:
    """Every trial told, or the CPU-seconds budget spent with no trial left running: the service
    runs the study's promotion next."""
    spent = s.budget_cpu_s is not None and s.cpu_seconds >= s.budget_cpu_s
    return s.told >= s.trials or (spent and s.running == 0 and s.asked == s.told)


class DownloadedModel(BaseModel):
    """A model file :meth:`Client.download_model` saved: where, its size and its checked sha256."""

    path: str
    bytes: int
    sha256: str


def _retry_after(r: httpx.Response, default: float) -> float:
    try:
        return max(0.0, float(r.headers["Retry-After"]))
    except (KeyError, ValueError):
        return default


class ApiError(Exception):
    def __init__(self, status: int, detail: Any) -> None:
        self.status, self.detail = status, detail
        super().__init__(f"HTTP {status}: {format_detail(detail)}")


def format_detail(detail: Any) -> str:
    if isinstance(detail, list):
        return "; ".join(
            f"{d.get('path', '?')}: {d.get('msg', d)}" if isinstance(d, dict) else str(d) for d in detail
        )
    return str(detail)


class Client:
    def __init__(
        self, base_url: str, token: str, *, timeout: float = 30.0, retries: int = 3, backoff_s: float = 0.5
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retries, self.backoff_s = retries, backoff_s
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
            transport=httpx.HTTPTransport(retries=retries),  # connection errors only: safe to retry
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """The JSON body of one request (untyped; the methods below parse it into the API's models)."""
        return self._body(self._send(method, path, **kwargs))

    def _get(self, model: type[M], method: str, path: str, **kwargs: Any) -> M:
        return model.model_validate(self.request(method, path, **kwargs))

    def _first(self, model: type[M], path: str, params: dict[str, Any]) -> M | None:
        """The first item of a filtered list, or None."""
        data = self.request("GET", path, params=params)["data"]
        return model.model_validate(data[0]) if data else None

    def _body(self, r: httpx.Response) -> Any:
        """The JSON body of a 2xx response, or :class:`ApiError`."""
        if r.status_code >= 300:  # redirects are not followed: a URL that redirects is a wrong --server
            try:
                body = r.json()
                detail = body.get("detail", r.text) if isinstance(body, dict) else r.text
            except ValueError:
                detail = r.text[:200] or r.reason_phrase
            raise ApiError(r.status_code, detail)
        if not r.content:
            return None
        try:
            return r.json()
        except ValueError:
            raise ApiError(r.status_code, f"not an archscreen API response: {r.text[:200]!r}") from None

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request, retried when that is safe: an idempotent request (GET, HEAD, PUT, DELETE,
        or a POST carrying an ``Idempotency-Key``) after a dropped connection or a 502/503/504,
        waiting as the server's ``Retry-After`` says (capped), at most ``retries`` times."""
        headers = kwargs.get("headers") or {}
        idempotent = method.upper() in IDEMPOTENT_METHODS or "Idempotency-Key" in headers
        for attempt in range(self.retries + 1):
            last = attempt == self.retries or not idempotent
            try:
                r = self._http.request(method, path, **kwargs)
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.ConnectError):
                # a connection the server closed under us (e.g. a keep-alive dropped after an error)
                if last:
                    raise
                time.sleep(self.backoff_s * 2**attempt)
                continue
            if r.status_code not in RETRY_STATUSES or last:
                return r
            time.sleep(min(_retry_after(r, self.backoff_s * 2**attempt), MAX_RETRY_WAIT_S))
        raise AssertionError("unreachable")  # pragma: no cover

    # ---------------------------------------------------------------- studies

    def create_study(
        self,
        name: str,
        *,
        dataset: str,
        screening: dict[str, Any] | None = None,
        policy: dict[str, Any] | None = None,
    ) -> StudyOut:
        body: dict[str, Any] = {"name": name, "dataset": dataset}
        if screening is not None:
            body["screening"] = screening
        if policy is not None:
            body["policy"] = policy
        return self._get(StudyOut, "POST", "/api/v1/studies", json=body)

    def create_search(
        self,
        name: str,
        *,
        dataset: str,
        space: dict[str, Any] | str,
        search: dict[str, Any],
        screening: dict[str, Any] | None = None,
        policy: dict[str, Any] | None = None,
    ) -> StudyOut:
        """A search study: Optuna asks ``search['trials']`` points of ``space`` (docs/service.md);
        its progress is the returned study's ``search``."""
        body: dict[str, Any] = {"name": name, "dataset": dataset, "space": space, "search": search}
        body.update({k: v for k, v in (("screening", screening), ("policy", policy)) if v is not None})
        return self._get(StudyOut, "POST", "/api/v1/studies", json=body)

    def search(
        self,
        space: dict[str, Any] | str | Path,
        *,
        dataset: str,
        trials: int = 20,
        sampler: str = "tpe",
        objectives: list[str] | None = None,
        parallel: int | None = None,
        seed: int | None = None,
        budget_cpu_s: float | None = None,
        screening: dict[str, Any] | None = None,
        policy: dict[str, Any] | None = None,
        name: str | None = None,
        wait: bool = False,
        timeout: float | None = None,
        poll_s: float = 2.0,
        on_update: Callable[[SearchOut], None] | None = None,
    ) -> StudyOut:
        """Search ``space`` (a document, its YAML text, or a :class:`~pathlib.Path` to a file) on
        ``dataset``: a search study whose trials Optuna asks in the service (docs/search.md).
        Returns the study; with ``wait``, once the search is done (:func:`search_finished`), its
        ``search`` holding the final counts, the best trial and the CPU-seconds spent. Fields left
        None take the service's defaults (``SearchConfig``); nsga2 without ``objectives`` gets
        ``["val_loss", "params"]``. A refused request raises :class:`ApiError` (422 naming the
        field, e.g. ``search.sampler``)."""
        import uuid

        doc = space.read_text() if isinstance(space, Path) else space
        if objectives is None and sampler == "nsga2":
            objectives = ["val_loss", "params"]
        given = {"objectives": objectives, "parallel": parallel, "seed": seed, "budget_cpu_s": budget_cpu_s}
        search = {"sampler": sampler, "trials": trials, **{k: v for k, v in given.items() if v is not None}}
        study = self.create_search(
            name or f"search-{uuid.uuid4().hex[:8]}",
            dataset=dataset,
            space=doc,
            search=search,
            screening=screening,
            policy=policy,
        )
        return (
            self.wait_search(study.id, timeout=timeout, poll_s=poll_s, on_update=on_update) if wait else study
        )

    def wait_search(
        self,
        study_id: int,
        *,
        timeout: float | None = None,
        poll_s: float = 2.0,
        on_update: Callable[[SearchOut], None] | None = None,
    ) -> StudyOut:
        """Poll a search study until :func:`search_finished`; ``on_update`` gets its progress each
        poll. Raises ``TimeoutError`` after ``timeout`` seconds, ``ValueError`` for a plain study."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            study = self.study(study_id)
            if study.search is None:
                raise ValueError(f"study {study_id} is not a search study")
            if on_update is not None:
                on_update(study.search)
            if search_finished(study.search):
                return study
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"search study {study_id} still running after {timeout} s")
            time.sleep(poll_s)

    def study(self, study_id: int) -> StudyOut:
        return self._get(StudyOut, "GET", f"/api/v1/studies/{study_id}")

    def study_by_name(self, name: str) -> StudyOut | None:
        return self._first(StudyOut, "/api/v1/studies", {"name": name})

    def studies(self, *, limit: int = 50, offset: int = 0) -> Page[StudyOut]:
        params = {"limit": limit, "offset": offset}
        return self._get(Page[StudyOut], "GET", "/api/v1/studies", params=params)

    # ---------------------------------------------------------------- candidates

    def add_candidates(
        self, study_id: int, candidates: list[dict[str, Any]], *, idempotency_key: str | None = None
    ) -> list[CandidateOut]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        page = self.request(
            "POST", f"/api/v1/studies/{study_id}/candidates", json=candidates, headers=headers
        )
        return [CandidateOut.model_validate(x) for x in page["data"]]

    def candidates(self, study_id: int) -> list[CandidateOut]:
        return [CandidateOut.model_validate(x) for x in self._paged(f"/api/v1/studies/{study_id}/candidates")]

    def candidate(self, candidate_id: int, *, since: int = 0) -> CandidateDetail:
        return self._get(
            CandidateDetail, "GET", f"/api/v1/candidates/{candidate_id}", params={"since": since}
        )

    def cancel_candidate(self, candidate_id: int) -> CancelOut:
        return self._get(CancelOut, "POST", f"/api/v1/candidates/{candidate_id}/cancel")

    def _paged(self, path: str, page_size: int = 200) -> Iterator[dict[str, Any]]:
        offset = 0
        while True:
            page = self.request("GET", path, params={"limit": page_size, "offset": offset})
            yield from page["data"]
            offset += len(page["data"])
            if not page["data"] or offset >= page["count"]:
                return

    # ---------------------------------------------------------------- waiting

    def summary(self, study_id: int) -> StudySummary:
        """Everything a dashboard shows for a study in one request: candidates with their progress
        and score, the ranking, tuning jobs."""
        return self._get(StudySummary, "GET", f"/api/v1/studies/{study_id}/summary")

    def summary_if_changed(self, study_id: int, etag: str | None) -> tuple[StudySummary | None, str | None]:
        """``(summary, etag)``, or ``(None, etag)`` when the study has not changed since ``etag``
        (the server answers ``304`` after one indexed read)."""
        headers = {"If-None-Match": etag} if etag else {}
        r = self._send("GET", f"/api/v1/studies/{study_id}/summary", headers=headers)
        if r.status_code == 304:
            return None, etag
        return StudySummary.model_validate(self._body(r)), r.headers.get("ETag")

    def wait(
        self,
        study_id: int,
        *,
        timeout: float | None = None,
        poll_s: float = 1.0,
        on_update: Callable[[list[CandidateRow]], None] | None = None,
    ) -> list[CandidateRow]:
        """Poll until every candidate's screening has ended; returns the candidates.

        One request a poll: the study's ``/summary`` with ``If-None-Match``, so an unchanged study
        costs a ``304``. The candidates are the summary's rows (``id``, ``name``, ``state``,
        ``progress``, ``score``, ``rank``, ``preferred_lr``, ``error``); ``on_update`` gets them
        each time they change.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        etag: str | None = None
        while True:
            summary, etag = self.summary_if_changed(study_id, etag)
            if summary is not None:
                cands = summary.candidates
                if on_update is not None:
                    on_update(cands)
                if cands and all(c.state in FINAL for c in cands):
                    return cands
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"study {study_id} still running after {timeout} s")
            time.sleep(poll_s)

    # ---------------------------------------------------------------- ranking and tuning

    def ranking(self, study_id: int, *, metric: str = "val_loss", k: int | None = None) -> RankingOut:
        params: dict[str, Any] = {"metric": metric}
        if k is not None:
            params["k"] = k
        return self._get(RankingOut, "GET", f"/api/v1/studies/{study_id}/ranking", params=params)

    def search_view(self, study_id: int) -> SearchViewOut:
        """A search study's trials, best-so-far curve against compute, fANOVA importances and
        Pareto front (``GET /studies/{id}/search``; a 409 ``ApiError`` for a study without a search)."""
        return self._get(SearchViewOut, "GET", f"/api/v1/studies/{study_id}/search")

    def promote(
        self,
        study_id: int,
        *,
        top_k: int | None = None,
        candidate_ids: list[int] | None = None,
        tuner: str | None = None,
        starts: int | None = None,
    ) -> list[JobOut]:
        """Tuning jobs for the top-k or the given candidates: ``starts`` per candidate (default: the
        study's policy), each from its own rate on the Switch posterior; returns every promoted
        candidate's jobs (existing ones too). The leaderboard answers with each one's best start."""
        body: dict[str, Any] = {}
        if top_k is not None:
            body["top_k"] = top_k
        if candidate_ids is not None:
            body["candidate_ids"] = candidate_ids
        if tuner is not None:
            body["tuner"] = tuner
        if starts is not None:
            body["starts"] = starts
        data = self.request("POST", f"/api/v1/studies/{study_id}/promote", json=body)["data"]
        return [JobOut.model_validate(x) for x in data]

    def tuning_jobs(self, study_id: int) -> list[JobOut]:
        return [JobOut.model_validate(x) for x in self._paged(f"/api/v1/studies/{study_id}/tuning-jobs")]

    def tuning_job(self, job_id: int, *, since: int = 0) -> JobOut:
        return self._get(JobOut, "GET", f"/api/v1/tuning-jobs/{job_id}", params={"since": since})

    def leaderboard(self, study_id: int) -> LeaderboardOut:
        return self._get(LeaderboardOut, "GET", f"/api/v1/studies/{study_id}/leaderboard")

    def download_model(
        self, job_id: int, dest: str | Path, *, on_progress: Callable[[int, int | None], None] | None = None
    ) -> DownloadedModel:
        """Save a succeeded tuning job's model file at ``dest`` (streamed, then checked against the
        server's sha256 and moved into place: ``dest`` is never left half-written).

        Returns where it went, its size and sha256; ``on_progress(received, total)`` after each chunk.
        A job that has not succeeded, or has no model, is an :class:`ApiError` (409).
        """
        import hashlib
        import os

        dest = Path(dest)
        part = dest.with_name(dest.name + ".part")
        digest, received = hashlib.sha256(), 0
        with self._http.stream(
            "GET", f"/api/v1/tuning-jobs/{job_id}/model", timeout=httpx.Timeout(30.0, read=600.0)
        ) as r:
            if r.status_code >= 300:
                r.read()
                self._body(r)  # raises ApiError with the server's detail
            length = r.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            try:
                with part.open("wb") as f:
                    for chunk in r.iter_bytes(1 << 20):
                        f.write(chunk)
                        digest.update(chunk)
                        received += len(chunk)
                        if on_progress is not None:
                            on_progress(received, total)
                expected = r.headers.get("X-Content-SHA256")
                if expected and expected != digest.hexdigest():
                    raise ApiError(r.status_code, f"the model file arrived corrupted ({received} bytes)")
                os.replace(part, dest)
            finally:
                part.unlink(missing_ok=True)
        return DownloadedModel(path=str(dest), bytes=received, sha256=digest.hexdigest())

    # ---------------------------------------------------------------- datasets

    def upload_dataset(
        self,
        path: str | Path,
        *,
        name: str | None = None,
        label_column: str | None = None,
        options: dict[str, Any] | None = None,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> DatasetOut:
        """Upload a dataset file (streamed in 1 MiB chunks); the same bytes again return the
        existing dataset. ``options``: a table's ``standardize``, ``categorical_columns`` (a list)
        and ``max_categories``, images' ``image_size`` and ``image_mode`` (the service's defaults
        for those left out).
        ``on_progress(sent, total)`` is called after each chunk."""
        path = Path(path)
        total = path.stat().st_size
        params: dict[str, Any] = {"name": name or path.name}
        if label_column:
            params["label_column"] = label_column
        for key, value in (options or {}).items():
            if isinstance(value, bool):
                value = str(value).lower()
            elif isinstance(value, list | tuple):
                value = ",".join(value)  # the API takes a comma-separated list
            params[key] = value

        def chunks() -> Iterator[bytes]:
            sent = 0
            with path.open("rb") as f:
                while chunk := f.read(1 << 20):
                    sent += len(chunk)
                    yield chunk
                    if on_progress is not None:
                        on_progress(sent, total)

        # streamed, so not retried on a dropped connection (a re-upload of the same bytes is safe)
        r = self._http.post(
            "/api/v1/datasets",
            params=params,
            content=chunks(),
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(total)},
            timeout=httpx.Timeout(30.0, read=600.0),
        )
        return DatasetOut.model_validate(self._body(r))

    def dataset_by_content(self, sha256: str, *, label_column: str | None = None) -> DatasetOut | None:
        params = {"sha256": sha256, **({"label_column": label_column} if label_column else {})}
        return self._first(DatasetOut, "/api/v1/datasets", params)

    def datasets(self) -> list[DatasetOut]:
        return [DatasetOut.model_validate(x) for x in self._paged("/api/v1/datasets")]

    def dataset(self, dataset_id: int) -> DatasetOut:
        return self._get(DatasetOut, "GET", f"/api/v1/datasets/{dataset_id}")

    def delete_dataset(self, dataset_id: int) -> None:
        self.request("DELETE", f"/api/v1/datasets/{dataset_id}")

    def stop_search(self, study_id: int) -> StudyOut:
        """Stop a search study's search: no trial is asked from now on (running ones go on)."""
        return self._get(StudyOut, "POST", f"/api/v1/studies/{study_id}/search/stop")

    def cancel_study(self, study_id: int) -> int:
        """Cancel every unfinished screening run and tuning job of the study; returns how many. A
        search study's search is stopped first, so that no new trial replaces a cancelled one."""
        if self.study(study_id).search is not None:
            self.stop_search(study_id)
        n = 0
        for c in self.candidates(study_id):
            if c.state not in FINAL:
                self.cancel_candidate(c.id)
                n += 1
        for j in self.tuning_jobs(study_id):
            if j.state not in FINAL:
                self.request("POST", f"/api/v1/tuning-jobs/{j.id}/cancel")
                n += 1
        return n
