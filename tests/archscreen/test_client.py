"""The Python client's results are the API's own response models, and it loads without the server."""

from __future__ import annotations

import subprocess
import sys
import typing

from archscreen.api import schemas
from archscreen.client import Client, DownloadedModel

SERVER_ONLY = ("fastapi", "starlette", "sqlalchemy", "celery", "alembic", "torch")


def test_the_client_imports_without_the_servers_dependencies() -> None:
    # a blocked module (None in sys.modules) raises ImportError on import: the client must not need it
    code = (
        "import sys\n"
        f"for name in {SERVER_ONLY!r}:\n"
        "    sys.modules[name] = None\n"
        "import archscreen.client\n"
        "from archscreen.client import Client\n"
        "assert Client.study.__annotations__\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_every_method_returns_an_api_model() -> None:
    """No method hands back untyped JSON (``request`` is the raw escape hatch)."""
    untyped = {}
    for name, fn in vars(Client).items():
        if name.startswith("_") or name == "request" or not callable(fn):
            continue
        returns = str(typing.get_type_hints(fn)["return"])
        if "Any" in returns or "dict" in returns:
            untyped[name] = returns
    assert untyped == {}
    assert typing.get_type_hints(Client.study)["return"] is schemas.StudyOut
    assert typing.get_type_hints(Client.download_model)["return"] is DownloadedModel
