"""Datasets over REST (in-process app, real database, real validation child process, real files)."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from archscreen.api.app import create_app
from archscreen.settings import Settings
from archscreen.store import Database
from tests.api.test_api import token_for

URL = "/api/v1/datasets"
MLP = {"layers": ["flatten", {"linear": 8}, "relu"], "head": "classifier"}


def npz_bytes(n: int = 120, features: int = 6, classes: int = 3, **extra: np.ndarray) -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    np.savez(
        buf,
        x_train=rng.normal(size=(n, features)).astype(np.float32),
        y_train=rng.integers(0, classes, n),
        **extra,
    )
    return buf.getvalue()


def parquet_bytes(n: int = 90) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(1)
    table = pa.table(
        {
            "a": rng.normal(size=n),
            "b": rng.integers(0, 5, n),
            "label": rng.choice(["cat", "dog", "emu"], n),
            "split": ["train"] * (n - 30) + ["val"] * 15 + ["test"] * 15,
        }
    )
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


@pytest.fixture
def settings(migrated: Database, tmp_path: Path) -> Settings:
    s = Settings(data_dir=tmp_path / "data", database_url=migrated.url)
    s.ensure_dirs()
    return s


@pytest.fixture
def client(settings: Settings, migrated: Database) -> TestClient:
    with TestClient(create_app(settings)) as c:
        c.headers.update(token_for(migrated, "acme"))
        yield c  # type: ignore[misc]


def upload(client: TestClient, body: bytes, **params: str):  # type: ignore[no-untyped-def]
    return client.post(URL, params=params, content=body, headers={"Content-Type": "application/octet-stream"})


def stored_files(settings: Settings) -> list[Path]:
    root = settings.resolved_artifacts_dir
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_npz_upload_describes_the_data_and_dedupes_by_content(client: TestClient, settings: Settings) -> None:
    body = npz_bytes()
    r = upload(client, body, name="mine.npz")
    assert r.status_code == 201, r.text
    ds = r.json()
    assert ds["ref"] == f"ds_{ds['id']}" and ds["sha256"] == hashlib.sha256(body).hexdigest()
    assert (ds["task"], ds["input_shape"], ds["num_classes"]) == ("classification", [6], 3)
    assert ds["split_sizes"] == {"train": 84, "val": 18, "test": 18} and ds["size_bytes"] == len(body)
    again = upload(client, body, name="other-name.npz")
    assert again.status_code == 200 and again.json()["id"] == ds["id"]
    assert len(stored_files(settings)) == 1, "one copy, stored under its sha256"
    assert client.get(URL).json()["count"] == 1
    assert client.get(URL, params={"sha256": ds["sha256"]}).json()["data"][0]["id"] == ds["id"]
    assert client.get(f"{URL}/{ds['id']}").json()["name"] == "mine.npz"


def test_tables_with_a_label_column(client: TestClient) -> None:
    r = upload(client, parquet_bytes(), name="t.parquet", label_column="label")
    assert r.status_code == 201, r.text
    ds = r.json()
    assert ds["classes"] == ["cat", "dog", "emu"] and ds["num_classes"] == 3 and ds["input_shape"] == [2]
    assert ds["split_sizes"] == {"train": 60, "val": 15, "test": 15}
    csv = "x1,x2,y\n" + "\n".join(f"{i % 7},{i * 0.5},{i * 0.1}" for i in range(50))
    r = upload(client, csv.encode(), name="r.csv", label_column="y")
    assert r.status_code == 201, r.text
    assert r.json()["task"] == "regression" and r.json()["target_dim"] == 1


def zip_bomb() -> bytes:
    """An .npz whose member declares far more uncompressed bytes than it has (zeros compress well)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        header = np.lib.format.header_data_from_array_1_0(np.zeros(1, dtype=np.float64))
        header["shape"] = (300_000_000,)
        member = io.BytesIO()
        np.lib.format.write_array_header_1_0(member, header)
        with zf.open("x_train.npy", "w", force_zip64=True) as f:
            f.write(member.getvalue())
            chunk = bytes(1 << 20)
            for _ in range(1200):  # 1.2 GB of zeros, ~1.2 MB compressed
                f.write(chunk)
    return buf.getvalue()


BAD = [
    (b"not a zip at all", {"name": "a.npz"}, "not an .npz archive"),
    (npz_bytes(x_val=np.zeros((3, 6), np.float32)), {"name": "a.npz"}, "x_val given without y_val"),
    (
        npz_bytes(n=20, x_test=np.full((5, 6), np.nan, np.float32), y_test=np.zeros(5, int)),
        {"name": "a.npz"},
        "NaN",
    ),
    (npz_bytes(extra_unused=np.array([1])), {"name": "a.npz", "label_column": "y"}, "no label column"),
    (parquet_bytes(), {"name": "t.parquet", "label_column": "nope"}, "no label column 'nope'"),
    (b"a,b,y\n1,x,0\n2,y,1\n", {"name": "t.csv", "label_column": "y"}, "too few to carve"),
    (b"\x00\x01", {"name": "a.bin"}, "give format"),
]


def object_array_npz() -> bytes:
    buf = io.BytesIO()
    np.savez(buf, x_train=np.array([{"a": 1}] * 10, dtype=object), y_train=np.zeros(10, int))
    return buf.getvalue()


# A bad file is refused before any row is written, whatever the database: the file cases run on the
# embedded default (SQLite); the other tests of this module run on both backends.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("body,params,message", [*BAD, (object_array_npz(), {"name": "a.npz"}, "pickle")])
def test_bad_files_are_422s_and_leave_nothing(
    client: TestClient, settings: Settings, body: bytes, params: dict[str, str], message: str
) -> None:
    r = upload(client, body, **params)
    assert r.status_code == 422, r.text
    assert message in r.json()["detail"][0]["msg"], r.json()
    assert client.get(URL).json()["count"] == 0
    assert stored_files(settings) == [], "no partial or temporary file is left"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_zip_bomb_is_refused_without_inflating(client: TestClient, settings: Settings) -> None:
    r = upload(client, zip_bomb(), name="bomb.npz")
    assert r.status_code == 422 and "unpacks to" in r.json()["detail"][0]["msg"], r.text
    assert stored_files(settings) == []


def test_studies_name_their_tenants_dataset(client: TestClient, migrated: Database) -> None:
    ds = upload(client, npz_bytes(), name="mine.npz").json()
    r = client.post("/api/v1/studies", json={"name": "s", "dataset": ds["ref"]})
    assert r.status_code == 201, r.text
    # no measured cap: max_epochs "auto" is at least 10 passes and 2,000 steps of its training rows
    steps = -(-ds["split_sizes"]["train"] // 32)
    assert r.json()["screening"]["max_epochs"] == max(10, -(-2000 // steps))
    big = client.post(
        "/api/v1/studies", json={"name": "b", "dataset": ds["ref"], "screening": {"batch_size": 256}}
    )
    assert big.json()["screening"]["max_epochs"] == 2000  # one step an epoch at batch 256
    fixed = client.post(
        "/api/v1/studies", json={"name": "f", "dataset": ds["ref"], "screening": {"max_epochs": 4}}
    )
    assert fixed.json()["screening"]["max_epochs"] == 4
    study = r.json()["id"]
    ok = client.post(f"/api/v1/studies/{study}/candidates", json={"spec": MLP})
    assert ok.status_code == 201, ok.text
    conv = {"layers": [{"conv2d": {"out": 4, "kernel": 3}}, "flatten"], "head": "classifier"}
    bad = client.post(f"/api/v1/studies/{study}/candidates", json={"spec": conv})
    assert bad.status_code == 422 and bad.json()["detail"][0]["path"].startswith("body.spec.layers[0]")
    for ref in ("ds_999", "ds_3293499650"):  # the second is past a 32-bit id (was a 500 on PostgreSQL)
        missing = client.post("/api/v1/studies", json={"name": "t", "dataset": ref})
        assert missing.status_code == 422 and missing.json()["detail"][0]["path"] == "body.dataset"
    # deleting a dataset a study uses is refused; the other tenant sees none of it
    used = client.delete(f"{URL}/{ds['id']}")
    assert used.status_code == 409 and "'s'" in used.json()["detail"]
    other = token_for(migrated, "other")
    assert client.get(f"{URL}/{ds['id']}", headers=other).status_code == 404
    assert client.delete(f"{URL}/{ds['id']}", headers=other).status_code == 404
    assert client.get(URL, headers=other).json()["count"] == 0
    theirs = client.post("/api/v1/studies", json={"name": "x", "dataset": ds["ref"]}, headers=other)
    assert theirs.status_code == 422 and theirs.json()["detail"][0]["path"] == "body.dataset"


def test_delete_removes_the_row_and_the_file(client: TestClient, settings: Settings) -> None:
    ds = upload(client, npz_bytes(), name="mine.npz").json()
    assert client.delete(f"{URL}/{ds['id']}").status_code == 204
    assert client.get(f"{URL}/{ds['id']}").status_code == 404
    assert stored_files(settings) == []


def test_limits_are_413_and_429_with_the_limit(migrated: Database, tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "d",
        database_url=migrated.url,
        max_dataset_bytes=20_000,
        max_datasets_per_tenant=2,
        max_dataset_total_bytes_per_tenant=5_000,
    )
    settings.ensure_dirs()
    with TestClient(create_app(settings)) as c:
        c.headers.update(token_for(migrated, "acme"))
        big = upload(c, npz_bytes(n=2000), name="big.npz")  # Content-Length says so: refused unread
        assert big.status_code == 413 and big.json()["limit_bytes"] == 20_000, big.text
        body = npz_bytes(n=2000)
        streamed = c.post(  # no Content-Length: cut off while streaming
            URL,
            params={"name": "big.npz"},
            content=iter([body[i : i + 4096] for i in range(0, len(body), 4096)]),
            headers={"Content-Type": "application/octet-stream"},
        )
        assert streamed.status_code == 413 and streamed.json()["limit"] == 20_000, streamed.text
        assert not [p for p in (tmp_path / "d").rglob("*") if p.is_file() and "datasets" in str(p)]
        assert upload(c, npz_bytes(n=100), name="a.npz").status_code == 201
        over = upload(c, npz_bytes(n=110), name="b.npz")
        assert over.status_code == 413 and over.json()["limit"] == 5_000, over.text
        settings.max_dataset_total_bytes_per_tenant = 10**9
        assert upload(c, npz_bytes(n=111), name="b.npz").status_code == 201
        third = upload(c, npz_bytes(n=112), name="c.npz")
        assert third.status_code == 429 and third.json()["limit"] == 2, third.text


def mixed_table_bytes(n: int = 120) -> bytes:
    """A wide-range numeric column with gaps, a string column with gaps, an integer code, a string
    label with one gap: what a team's table looks like."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(5)
    amount = rng.lognormal(5, 2, n)
    amount[::9] = np.nan
    label = rng.choice(["no", "yes"], n).astype(object)
    label[4] = None
    table = pa.table(
        {
            "amount": amount,
            "clinic": rng.choice(np.array(["north", "south", "east", None], dtype=object), n).tolist(),
            "code": rng.integers(0, 3, n),
            "label": label,
        }
    )
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_tables_preprocessing_is_reported_and_its_options_make_another_dataset(client: TestClient) -> None:
    body = mixed_table_bytes()
    r = upload(client, body, name="m.parquet", label_column="label")
    assert r.status_code == 201, r.text
    ds = r.json()
    prep = ds["preprocessing"]
    assert prep["standardize"] is True and prep["max_categories"] == 20
    kinds = {c["name"]: (c["kind"], c["encoding"]) for c in prep["columns"]}
    assert kinds == {
        "amount": ("numeric", "standardized, median-imputed + missing indicator"),
        "clinic": ("categorical", "one-hot (3 values + other)"),
        "code": ("numeric", "standardized"),
    }
    assert ds["input_shape"] == [prep["features"]] == [1 + 1 + 1 + 4]
    assert ds["dropped_rows_missing_label"] == 1
    assert [sum(c) for c in ds["class_counts"].values()] == list(ds["split_sizes"].values())
    assert client.get(f"{URL}/{ds['id']}").json()["preprocessing"] == prep
    same = upload(client, body, name="m.parquet", label_column="label")
    assert same.status_code == 200 and same.json()["id"] == ds["id"]
    found = client.get(URL, params={"sha256": ds["sha256"], "label_column": "label"}).json()
    assert [d["id"] for d in found["data"]] == [ds["id"]]
    other = upload(
        client,
        body,
        name="m.parquet",
        label_column="label",
        standardize="false",
        categorical_columns="code",
        max_categories="2",
    )
    assert other.status_code == 201 and other.json()["id"] != ds["id"], other.text
    cols = {c["name"]: c for c in other.json()["preprocessing"]["columns"]}
    assert cols["amount"]["encoding"].startswith("as-is") and cols["code"]["kind"] == "categorical"
    assert len(cols["clinic"]["categories"]) == 2


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    "body,params,path,message",
    [
        (npz_bytes(), {"name": "a.npz", "standardize": "false"}, "query.standardize", "for tables"),
        (b"a,y\n", {"name": "t.csv", "label_column": "y", "max_categories": "0"}, "query.max_categories", ""),
        (
            mixed_table_bytes(),
            {"name": "m.parquet", "label_column": "label", "categorical_columns": "nope"},
            "body",
            "categorical_columns names 'nope'",
        ),
    ],
)
def test_bad_preprocessing_options_are_422s_naming_the_field(
    client: TestClient, settings: Settings, body: bytes, params: dict[str, str], path: str, message: str
) -> None:
    r = upload(client, body, **params)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"][0]
    assert detail["path"] == path and message in detail["msg"], detail
    assert stored_files(settings) == []


# ---------------------------------------------------------------- issue 25 (items 2, 7), issue 28 (item 5)

SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@SQLITE
def test_multipart_upload_takes_format_and_name_from_the_file_part(client: TestClient) -> None:
    body = npz_bytes(n=60)
    r = client.post(URL, files={"file": ("data (1).npz", body, "application/octet-stream")})
    assert r.status_code == 201, r.text
    ds = r.json()
    assert (ds["name"], ds["format"], ds["size_bytes"]) == ("data _1_.npz", "npz", len(body))
    assert ds["sha256"] == hashlib.sha256(body).hexdigest(), "the file part's bytes, not the form's"
    # the part's field name gives the format when the filename has no suffix; same bytes: same dataset
    again = client.post(URL, files={"npz": ("blob", body)}, params={"name": "again"})
    assert again.status_code == 200 and again.json()["id"] == ds["id"], again.text
    raw = upload(client, body, name="raw.npz")
    assert raw.status_code == 200 and raw.json()["id"] == ds["id"], "raw and multipart: one dataset"


def form(*parts: tuple[str, str | None, bytes]) -> tuple[bytes, dict[str, str]]:
    """A multipart/form-data body of (field name, filename or None, bytes) parts, and its header."""
    out = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--B\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"
    return out + b"--B--\r\n", {"Content-Type": "multipart/form-data; boundary=B"}


@SQLITE
@pytest.mark.parametrize(
    "parts,params,path,message",
    [
        ([("name", None, b"x")], {}, "body.file", "no file part"),
        ([("file", "d.npz", b"PK"), ("label_column", None, b"y")], {}, "body.label_column", "no label"),
        ([("file", "d.csv", b"a,y\n1,0\n")], {}, "body.label_column", "needs the label column"),
        ([("file", "d.bin", b"..")], {}, "body.format", "give format"),
        ([("file", "d.npz", b"PK"), ("colour", None, b"red")], {}, "body.colour", "unknown form field"),
        ([("file", "d.npz", b"PK"), ("name", None, b"a")], {"name": "b"}, "body.name", "differs from"),
        ([("file", "d.npz", b"PK"), ("other", "e.npz", b"PK")], {}, "body.other", "one file per upload"),
        ([("file", "d.npz", b"PK"), ("max_categories", None, b"3")], {}, "body.max_categories", "for tables"),
        (
            [("file", "d.csv", b"a,y\n"), ("standardize", None, b"maybe")],
            {"label_column": "y"},
            "body.standardize",
            "",
        ),
        (
            [("file", "d.csv", b"a,y\n"), ("max_categories", None, b"3")],
            {"label_column": "y", "max_categories": "4"},
            "body.max_categories",
            "differs from",
        ),
    ],
)
def test_multipart_form_errors_are_422s_naming_the_part(
    client: TestClient, settings: Settings, parts: list, params: dict, path: str, message: str
) -> None:
    body, headers = form(*parts)
    r = client.post(URL, content=body, headers=headers, params=params)
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["path"] == path and message in r.json()["detail"][0]["msg"], r.json()
    assert stored_files(settings) == [] and client.get(URL).json()["count"] == 0


@SQLITE
def test_a_multipart_body_cut_before_its_closing_boundary_is_a_422(client: TestClient) -> None:
    body = b'--B\r\nContent-Disposition: form-data; name="file"; filename="d.npz"\r\n\r\nPK\x03\x04'
    r = client.post(URL, content=body, headers={"Content-Type": "multipart/form-data; boundary=B"})
    assert r.status_code == 422 and "closing boundary" in r.json()["detail"][0]["msg"], r.text


@SQLITE
def test_uploads_past_the_concurrent_validation_limits_are_429_with_retry_after(
    client: TestClient, settings: Settings, migrated: Database
) -> None:
    """A slot is a flock on a file: held here from another open file, as another API process would."""
    from archscreen.api.limits import ValidationSlots

    other_process = ValidationSlots(
        settings.data_dir.resolve() / "validation-slots", per_host=2, per_tenant=1
    )
    with other_process.hold(tenant_id=_tenant_id(migrated, "acme")):
        r = upload(client, npz_bytes(), name="a.npz")
        assert r.status_code == 429 and r.headers["Retry-After"] == "5", r.text
        assert "ARCHSCREEN_MAX_CONCURRENT_VALIDATIONS_PER_TENANT" in r.json()["detail"]
        with other_process.hold(tenant_id=999_001):  # the host's second slot, another tenant
            other = client.post(
                URL, files={"file": ("b.npz", npz_bytes())}, headers=token_for(migrated, "beta")
            )
            assert other.status_code == 429 and r.json()["limit"] == 1, other.text
            assert "ARCHSCREEN_MAX_CONCURRENT_VALIDATIONS)" in other.json()["detail"]
    assert stored_files(settings) == [] and client.get(URL).json()["count"] == 0


def _tenant_id(db: Database, name: str) -> int:
    from sqlalchemy import select

    from archscreen.store.models import Tenant

    with db.session() as s:
        return int(s.scalar(select(Tenant.id).where(Tenant.name == name)))  # type: ignore[arg-type]


@SQLITE
def test_a_table_over_the_unpacked_limit_is_a_413_from_its_metadata_and_sparse_labels_a_422(
    migrated: Database, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path / "d", database_url=migrated.url, max_dataset_unpacked_bytes=2000)
    settings.ensure_dirs()
    with TestClient(create_app(settings)) as c:
        c.headers.update(token_for(migrated, "acme"))
        csv = "a,b,y\n" + "".join(f"{i},{i},{i % 2}\n" for i in range(200))  # 200 x 3 x 4 = 2,400 bytes
        r = upload(c, csv.encode(), name="t.csv", label_column="y")
        assert r.status_code == 413, r.text
        assert (r.json()["limit"], r.json()["current"]) == (2000, 2400)
        assert "200 rows × 3 columns" in r.json()["detail"]
        assert "ARCHSCREEN_MAX_DATASET_UNPACKED_BYTES" in r.json()["detail"]
        sparse = "a,label\n" + "".join(f"{i},{(0, 1, 2, 5000000)[i % 4]}\n" for i in range(40))
        r = upload(c, sparse.encode(), name="s.csv", label_column="label")
        assert r.status_code == 422, r.text
        assert "label column 'label' holds 4 distinct class ids" in r.json()["detail"][0]["msg"]
        assert c.get(URL).json()["count"] == 0
    assert not [p for p in (tmp_path / "d").rglob("*") if p.is_file() and "datasets" in str(p)]


@SQLITE
def test_the_schema_offers_multipart_and_says_npz_takes_no_label_column(client: TestClient) -> None:
    op = client.get("/openapi.json").json()["paths"]["/api/v1/datasets"]["post"]
    content = op["requestBody"]["content"]
    assert set(content) == {"application/octet-stream", "multipart/form-data"}
    multipart = content["multipart/form-data"]["schema"]
    assert multipart["required"] == ["file"]
    # stated in words: schemathesis' coverage phase cannot evaluate if/then beside a binary part
    assert "if" not in multipart and "allOf" not in multipart
    rules = multipart["properties"]["format"]["description"]
    assert "npz" in rules and "no label_column" in rules and "no table options" in rules
    assert "must not send it" in multipart["properties"]["label_column"]["description"]
    label = next(p for p in op["parameters"] if p["name"] == "label_column")
    assert "npz upload must not send it" in label["description"]
    assert "Retry-After" in op["responses"]["429"]["headers"]


def test_the_sandbox_exit_statuses_agree_with_the_check_module() -> None:
    from archscreen.api import validation
    from archscreen.core.data import check

    assert (validation.EXIT_INVALID, validation.EXIT_TOO_LARGE, validation.EXIT_OUT_OF_MEMORY) == (
        check.EXIT_INVALID,
        check.EXIT_TOO_LARGE,
        check.EXIT_OUT_OF_MEMORY,
    )


@pytest.mark.parametrize(
    "file,name",
    [("data (1).npz", "data _1_.npz"), ("dir/x.csv", "x.csv"), ("((()))", "_"), ("  ", "dataset")],
)
def test_a_dataset_name_is_derived_from_any_file_name(file: str, name: str) -> None:
    import re

    from archscreen.store.datasets import NAME_PATTERN, name_from_file

    assert name_from_file(file) == name and re.match(NAME_PATTERN, name)


def test_the_sandbox_child_cannot_pass_its_address_space_limit(tmp_path: Path) -> None:
    """RLIMIT_AS is what makes slots x limit a bound on the host: a child asking for 3 GiB under a
    1 GiB limit fails, and its peak resident memory (from wait4) stays under the limit."""
    import sys

    from archscreen.api.validation import run_limited

    grab = [sys.executable, "-c", "import sys; b = bytearray(3 * 2**30); sys.exit(0)"]
    outcome = run_limited(grab, tmp_path, memory_bytes=2**30, timeout_s=60)
    assert outcome.returncode != 0 and "MemoryError" in outcome.stderr, outcome
    assert 0 < outcome.peak_rss_bytes < 2**30
    fine = run_limited([sys.executable, "-c", "print('ok')"], tmp_path, memory_bytes=2**30, timeout_s=60)
    assert (fine.returncode, fine.stdout.strip()) == (0, "ok")


@SQLITE
def test_a_multipart_upload_takes_a_tables_options_as_form_fields(client: TestClient) -> None:
    """The options as form fields are the query's: the same bytes and options, raw or multipart,
    are one dataset (other options make another: the test above)."""
    body = mixed_table_bytes()
    fields = {"label_column": "label", "standardize": "false", "max_categories": "2"}
    fields["categorical_columns"] = "code"
    r = client.post(URL, files={"file": ("m.parquet", body)}, data=fields)
    assert r.status_code == 201, r.text
    prep = r.json()["preprocessing"]
    cols = {c["name"]: c for c in prep["columns"]}
    assert prep["standardize"] is False and prep["max_categories"] == 2
    assert cols["code"]["kind"] == "categorical" and len(cols["clinic"]["categories"]) == 2
    raw = upload(
        client,
        body,
        name="m.parquet",
        label_column="label",
        standardize="false",
        categorical_columns="code",
        max_categories="2",
    )
    assert raw.status_code == 200 and raw.json()["id"] == r.json()["id"], raw.text
