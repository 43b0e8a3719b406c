"""The one settings class of the service (environment prefix ``ARCHSCREEN_``).

With nothing set, everything lives under ``data_dir`` (default ``./archscreen-data``):
a SQLite database, a filesystem Celery broker that needs no server, and the
artifacts folder. Production sets ``ARCHSCREEN_DATABASE_URL`` (PostgreSQL) and
``ARCHSCREEN_BROKER_URL`` (Redis); the code is the same.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ARCHSCREEN_", extra="ignore")

    data_dir: Path = Field(default=Path("archscreen-data"), description="Where embedded state lives.")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; default SQLite in data_dir.")
    broker_url: str | None = Field(
        default=None, description="Celery broker URL; default a filesystem broker in data_dir."
    )
    artifacts_dir: Path | None = Field(default=None, description="Checkpoints; default data_dir/artifacts.")
    queue: str = Field(default="archscreen", description="Celery queue name (one per deployment).")

    # job life cycle
    lease_s: float = Field(default=60.0, gt=0, description="A running job's lease; the heartbeat renews it.")
    heartbeat_s: float = Field(default=5.0, gt=0, description="Heartbeat and cancel-flag poll period.")
    reaper_interval_s: float = Field(default=10.0, gt=0)
    max_attempts: int = Field(default=3, ge=1, description="Deliveries of a job before it is failed.")
    job_soft_time_limit_s: int = Field(default=6 * 3600, ge=10)
    job_time_limit_s: int = Field(default=6 * 3600 + 300, ge=10)
    worker_seen_s: float = Field(default=30.0, gt=0, description="/readyz: a worker seen this recently.")

    # workers
    device: str = Field(default="auto", description="auto (cuda if visible, else cpu), cpu or cuda.")
    torch_threads: int = Field(default=0, ge=0, description="Threads per job; 0 = cores / concurrency.")
    jobs_per_gpu: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Job processes sharing one GPU (`archscreen worker --gpus ... --jobs-per-gpu K`); "
        "each caps its CUDA memory at gpu_memory_safety / K of the device.",
    )
    gpu_memory_safety: float = Field(
        default=0.95,
        gt=0,
        le=1,
        description="Part of a shared GPU's memory the K job processes may use together (the rest is "
        "left for each process's CUDA context, which the caching allocator's cap does not count).",
    )
    cuda_graphs: bool = Field(
        default=False,
        description="Compile screening models' bodies with torch.compile(mode='reduce-overhead') (CUDA "
        "graphs) on CUDA: fewer kernel launches for small models; a no-op with a logged reason on the CPU.",
    )
    worker_proc_alive_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="How long a new job process may take to start before Celery kills it (a busy host "
        "is slow; torch is imported before forking, so a start is normally well under a second).",
    )
    shutdown_grace_s: float = Field(
        default=8.0,
        ge=0,
        description="A stopping worker lets its jobs train on this long to reach an epoch boundary; "
        "then they stop at the next step. Either way the job is requeued and resumes from its checkpoint.",
    )
    lost_message_grace_s: float = Field(
        default=30.0,
        gt=0,
        description="A queued job whose message is in no broker queue and held by no worker for this "
        "long has its message re-sent.",
    )
    search_step_hold_s: float = Field(
        default=60.0,
        gt=0,
        description="A search study's step lock held this long is taken to be a dead step's and is taken "
        "over (a step is database work and one spec validation per new trial: well under a second).",
    )
    held_message_timeout_s: float = Field(
        default=90.0,
        gt=0,
        description="A job whose message a worker handed to a job process this long ago (a process start, "
        "worker_proc_alive_timeout_s, plus the lost-message grace) and which no process has claimed is "
        "released by that worker's watchdog and its message re-sent.",
    )

    # checkpoints (docs/reliability.md)
    delete_checkpoint_on_success: bool = Field(
        default=True,
        description="Delete a job's run checkpoint when it succeeds (a tuning job's best weights stay "
        "as its model file in the model store; without one its checkpoint stays). Failed and "
        "cancelled jobs keep theirs.",
    )
    checkpoint_free_margin_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=0,
        description="Free space a checkpoint save leaves on the artifacts disk; less is 'disk full' and "
        "the job is requeued to retry later instead of failing.",
    )

    # API
    auth_cache_s: float = Field(default=10.0, ge=0, description="How long a process trusts a checked token.")
    api_workers: int = Field(default=1, ge=1, description="uvicorn worker processes for `archscreen api`.")
    max_candidates_per_request: int = Field(
        default=500, ge=1, description="Candidates in one POST (docs/reliability.md)."
    )
    max_body_bytes: int = Field(
        default=4 * 1024 * 1024,
        ge=1024,
        description="Largest request body; a larger one is a 413 before it is parsed.",
    )
    db_connect_timeout_s: float = Field(
        default=3.0, gt=0, description="PostgreSQL connect timeout: a database outage is a fast 503."
    )
    db_pool_timeout_s: float = Field(default=5.0, gt=0, description="Wait for a pooled connection.")
    db_statement_timeout_s: float = Field(
        default=3.0,
        gt=0,
        description="PostgreSQL statement_timeout of the API's connections (the server cancels a "
        "statement, or a lock wait, that runs longer: 503).",
    )
    db_io_timeout_s: float = Field(
        default=4.0,
        gt=0,
        description="The API gives up on a PostgreSQL connection whose server has not answered for this "
        "long (a hung database or a frozen network path) and answers 503.",
    )
    max_spec_bytes: int = Field(default=256 * 1024, ge=1024)
    # user datasets (docs/service.md): stored by content in the blob store
    dataset_store_url: str | None = Field(
        default=None,
        description="Where dataset files live: an fsspec URL (s3://bucket/prefix); default "
        "artifacts_dir/datasets.",
    )
    max_dataset_bytes: int = Field(default=512 * 1024**2, ge=1024, description="Largest upload.")
    max_dataset_unpacked_bytes: int = Field(
        default=1024**3, ge=1024, description="Largest uncompressed .npz (checked without inflating)."
    )
    max_dataset_total_bytes_per_tenant: int = Field(default=10 * 1024**3, ge=0)
    max_datasets_per_tenant: int = Field(default=100, ge=1)
    # Upload validation's memory (docs/service.md, "Memory"): at most max_concurrent_validations
    # children on a host, each under an address-space limit of dataset_check_memory_bytes, so
    # together they never take more than their product (2 x 2 GiB = 4 GiB by default); the API lowers
    # the count where that product would pass half the host's physical memory. The floor: a child
    # that has imported torch, numpy and pyarrow holds about 1.1 GB of address space.
    dataset_check_memory_bytes: int = Field(
        default=2 * 1024**3,
        ge=1536 * 1024**2,
        description="Address-space limit (RLIMIT_AS) of one validation process.",
    )
    max_concurrent_validations: int = Field(
        default=2,
        ge=1,
        description="Uploads streamed and validated at once on one host (all API processes together); "
        "past it a 429 with Retry-After.",
    )
    max_concurrent_validations_per_tenant: int = Field(
        default=1, ge=1, description="Uploads streamed and validated at once for one tenant; past it a 429."
    )
    dataset_check_timeout_s: float = Field(default=300.0, gt=0, description="Validation time limit.")
    # per-tenant limits (docs/reliability.md): 429 / 413 with the limit in the body
    max_candidates_per_study: int = Field(default=5000, ge=1, description="Candidates in one study.")
    max_active_jobs_per_tenant: int = Field(
        default=10_000, ge=1, description="Queued + running jobs of one tenant."
    )
    max_artifact_bytes_per_tenant: int = Field(
        default=100 * 1024**3, ge=0, description="Checkpoints and models stored for one tenant."
    )
    metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Serve Prometheus metrics on this port (a listener of its own, e.g. not published) "
        "instead of /metrics on the API port.",
    )
    metrics_host: str = Field(default="127.0.0.1", description="Address of the metrics listener.")
    metrics_token: str | None = Field(
        default=None, description="When set, /metrics on the API port needs 'Authorization: Bearer <it>'."
    )
    page_limit_max: int = Field(default=500, ge=1)

    @field_validator("database_url", "broker_url")
    @classmethod
    def _blank_is_default(cls, value: str | None) -> str | None:
        return value or None

    @cached_property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'archscreen.db').resolve()}"

    @cached_property
    def resolved_broker_url(self) -> str:
        return self.broker_url or "filesystem://localhost/"

    @cached_property
    def resolved_artifacts_dir(self) -> Path:
        return (self.artifacts_dir or self.data_dir / "artifacts").resolve()

    @property
    def broker_folder(self) -> Path:
        return (self.data_dir / "broker").resolve()

    @property
    def embedded_broker(self) -> bool:
        return self.resolved_broker_url.startswith("filesystem://")

    def broker_transport_options(self) -> dict[str, Any]:
        if self.embedded_broker:
            folder = self.broker_folder
            return {
                "data_folder_in": str(folder / "queue"),
                "data_folder_out": str(folder / "queue"),
                "control_folder": str(folder / "control"),
                "store_processed": False,
                "polling_interval": 0.25,
            }
        # Redis re-delivers an unacknowledged message after visibility_timeout: keep it above the
        # longest job or a long job runs twice (acks_late).
        return {"visibility_timeout": self.job_time_limit_s + 600}

    def ensure_dirs(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.resolved_artifacts_dir.mkdir(parents=True, exist_ok=True)
        if self.embedded_broker:
            for sub in ("queue", "control"):
                (self.broker_folder / sub).mkdir(parents=True, exist_ok=True)


def get_settings(**overrides: Any) -> Settings:
    return Settings(**overrides)
