"""Image uploads over REST: a zip of class folders or a Parquet of image bytes, converted in the real
validation child; hostile archives refused with a 4xx naming the member, nothing stored."""

from __future__ import annotations

import io
import struct
import time
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from archscreen.api.app import create_app
from archscreen.settings import Settings
from archscreen.store import Database
from tests.api.test_api import token_for
from tests.api.test_datasets import URL, stored_files, upload
from tests.core.data.test_images import digits_members, png
from tests.services import RunningService, service_backend

CONV = {"layers": [{"conv2d": {"out": 4, "kernel": 3}}, "relu", "flatten"], "head": "classifier"}


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A few-byte PNG whose header declares ``width`` x ``height`` pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    )


def zip_bomb() -> bytes:
    """A class folder with one member that inflates to 100 MiB of zeros (~100 kB on the wire)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in digits_members(per_class=2).items():
            zf.writestr(name, data)
        with zf.open("1/huge.png", "w", force_zip64=True) as member:
            block = bytes(1 << 20)
            for _ in range(100):
                member.write(block)
    return buf.getvalue()


def image_parquet() -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    members = digits_members(per_class=5)
    buf = io.BytesIO()
    table = pa.table({"pixels": [members[n] for n in members], "digit": [int(n[0]) for n in members]})
    pq.write_table(table, buf)
    return buf.getvalue()


# The upload path does not depend on the database: the embedded default (SQLite) only.
SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture
def settings(migrated: Database, tmp_path: Path) -> Settings:
    s = Settings(data_dir=tmp_path / "data", database_url=migrated.url)
    s.ensure_dirs()
    return s


@pytest.fixture
def client(settings: Settings, migrated: Database) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        c.headers.update(token_for(migrated, "acme"))
        yield c


@SQLITE
def test_a_zip_of_class_folders_is_a_dataset_a_study_uses(client: TestClient, settings: Settings) -> None:
    r = upload(client, zip_bytes(digits_members(per_class=10, split_level=True)), name="digits.zip")
    assert r.status_code == 201, r.text
    ds = r.json()
    assert ds["format"] == "image_zip" and ds["label_column"] is None
    assert ds["task"] == "classification" and ds["input_shape"] == [1, 8, 8]
    assert ds["classes"] == ["0", "1", "2"] and ds["num_classes"] == 3
    assert ds["split_sizes"] == {"train": 20, "val": 6, "test": 4}  # test carved from train
    image = ds["image"]
    assert image["mode"] == "L" and (image["height"], image["width"]) == (8, 8)
    assert len(image["mean"]) == len(image["std"]) == 1 and 0 < image["mean"][0] < 1
    assert client.get(f"{URL}/{ds['id']}").json()["image"] == image
    study = client.post("/api/v1/studies", json={"name": "digits", "dataset": ds["ref"]})
    assert study.status_code == 201, study.text
    conv = client.post(f"/api/v1/studies/{study.json()['id']}/candidates", json={"spec": CONV})
    assert conv.status_code == 201, conv.text


@SQLITE
def test_options_and_an_image_parquet(client: TestClient) -> None:
    # a Parquet with an image-bytes column beside its label is images (format detected in the child)
    params = {"label_column": "digit", "image_size": "4x6", "image_mode": "RGB"}
    table = upload(client, image_parquet(), name="digits.parquet", **params)
    assert table.status_code == 201, table.text
    assert table.json()["format"] == "image_parquet" and table.json()["input_shape"] == [3, 4, 6]
    assert len(table.json()["image"]["mean"]) == 3 and table.json()["image"]["median_source_size"] == [8, 8]
    bad = upload(client, b"PK", name="d.zip", image_size="huge")
    assert bad.status_code == 422 and bad.json()["detail"][0]["path"] == "query.image_size"
    labelled = upload(client, b"PK", name="d.zip", label_column="y")
    assert labelled.status_code == 422 and "folder" in labelled.json()["detail"][0]["msg"]


@SQLITE
def test_multipart_image_options_and_what_an_image_upload_refuses(client: TestClient) -> None:
    body = zip_bytes(digits_members(per_class=4))
    form = {"image_size": "4", "image_mode": "RGB"}
    r = client.post(URL, files={"file": ("digits.zip", body)}, data=form)
    assert r.status_code == 201, r.text
    assert r.json()["format"] == "image_zip" and r.json()["input_shape"] == [3, 4, 4]
    other = client.post(URL, files={"file": ("digits.zip", body)}, data={"image_size": "6"})
    assert other.status_code == 201 and other.json()["id"] != r.json()["id"], "other options: another dataset"
    # refused before the file is validated: each a 422 naming the field and where it came from
    refusals = [
        (
            client.post(URL, files={"file": ("d.zip", b"PK")}, data={"standardize": "false"}),
            "body.standardize",
        ),
        (upload(client, b"PK", name="d.zip", max_categories="3"), "query.max_categories"),
        (client.post(URL, files={"file": ("d.zip", b"PK")}, data={"image_mode": "CMYK"}), "body.image_mode"),
        (upload(client, b"a,y\n1,0\n", name="t.csv", label_column="y", image_size="8"), "query.image_size"),
        (
            client.post(
                URL, files={"file": ("d.zip", b"PK")}, data={"image_size": "4"}, params={"image_size": "5"}
            ),
            "body.image_size",
        ),
    ]
    for answer, path in refusals:
        assert answer.status_code == 422, (path, answer.text)
        assert answer.json()["detail"][0]["path"] == path, answer.json()


HOSTILE = [
    (
        digits_members(per_class=2) | {"2/broken.png": png(np.zeros((8, 8), np.uint8))[:30]},
        "2/broken.png: not a readable image",
    ),
    (digits_members(per_class=2) | {"../x.png": b"x"}, "../x.png: a member name outside the archive"),
    (digits_members(per_class=2) | {"1/bomb.png": png_claiming(60_000, 60_000)}, "1/bomb.png: the image has"),
]


@SQLITE
@pytest.mark.parametrize(("members", "message"), HOSTILE, ids=["corrupt", "dotdot", "bomb"])
def test_hostile_members_are_422s_naming_them(
    client: TestClient, settings: Settings, members: dict[str, bytes], message: str
) -> None:
    r = upload(client, zip_bytes(members), name="evil.zip")
    assert r.status_code == 422, r.text
    assert message in r.json()["detail"][0]["msg"], r.json()
    assert client.get(URL).json()["count"] == 0
    assert stored_files(settings) == [], "no partial or temporary file is left"


@SQLITE
def test_a_zip_bomb_is_refused_from_its_headers(client: TestClient, settings: Settings) -> None:
    body = zip_bomb()
    assert len(body) < 2 * 2**20
    t0 = time.monotonic()
    r = upload(client, body, name="bomb.zip")
    assert r.status_code == 422, r.text
    assert "1/huge.png: unpacks to 104,857,600 bytes" in r.json()["detail"][0]["msg"]
    assert time.monotonic() - t0 < 30  # refused from the zip's directory: nothing inflated
    assert client.get(URL).json()["count"] == 0 and stored_files(settings) == []


@pytest.fixture
def service(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RunningService]:
    for svc in service_backend(request, tmp_path):
        svc.start_api()
        svc.start_worker(concurrency=1)
        svc.wait_ready()
        yield svc


@pytest.mark.slow
@pytest.mark.parametrize("service", ["sqlite+filesystem"], indirect=True)
def test_a_worker_screens_a_conv_net_on_uploaded_pngs(service: RunningService) -> None:
    auth = {"Authorization": f"Bearer {service.token}"}
    body = zip_bytes(digits_members(per_class=20))
    up = httpx.post(
        f"{service.url}{URL}", params={"name": "digits.zip"}, content=body, headers=auth, timeout=120
    )
    assert up.status_code == 201, up.text
    study = httpx.post(
        f"{service.url}/api/v1/studies",
        json={
            "name": "pngs",
            "dataset": up.json()["ref"],
            "screening": {"max_epochs": 2, "max_steps_per_epoch": 3, "patience": 5},
        },
        headers=auth,
        timeout=60,
    )
    assert study.status_code == 201, study.text
    sid = study.json()["id"]
    r = httpx.post(
        f"{service.url}/api/v1/studies/{sid}/candidates", json={"spec": CONV}, headers=auth, timeout=60
    )
    assert r.status_code == 201, r.text
    deadline = time.monotonic() + 180
    while True:
        ranking = httpx.get(f"{service.url}/api/v1/studies/{sid}/summary", headers=auth, timeout=60).json()[
            "ranking"
        ]
        if ranking["data"] and all(row["score"] is not None for row in ranking["data"]):
            break
        assert time.monotonic() < deadline, service.logs()
        time.sleep(0.5)
