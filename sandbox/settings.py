"""Every setting of the controller, read once from the environment into one typed object.

A bad value stops the controller at start with the variable's name and the rule it broke,
never with the value itself (it may be a secret). Unset or empty variables take their
defaults. ``create_app(test_config)`` applies its overrides on top of these.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from pydantic_settings import SettingsError as SourceError
from sqlalchemy import make_url
from sqlalchemy.exc import ArgumentError

from compute.errors import SandboxError, SealingError
from compute.masking import MAX_PROVIDERS
from compute.sealing import parse_keyring
from compute.spec import DEFAULT_MIN_PROVIDERS

PREFIX = "SANDBOX_"
# Read by the `sandbox` client commands, not by the controller.
CLIENT_VARIABLES = frozenset({"SANDBOX_URL", "SANDBOX_TOKEN"})
# Read by `sandbox agent` (its options' environment names), not by the controller.
AGENT_VARIABLES = frozenset({"SANDBOX_AGENT_METRICS_PORT", "SANDBOX_AGENT_METRICS_HOST",
                             "SANDBOX_AGENT_MAX_IMAGE_AGE_DAYS", "SANDBOX_AGENT_STAGE_ROOT"})
ONE_LINE = re.compile(r"[^\x00-\x1f\x7f]+")
# RFC 6750 b64token: what a bearer token may hold and still travel in a header.
BEARER = re.compile(r"[A-Za-z0-9._~+/=-]{32,256}")
MASK = "***"
DOMAIN = re.compile(r"(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}")
OIDC_REQUIRED = ("SANDBOX_OIDC_CLIENT_ID", "SANDBOX_OIDC_CLIENT_SECRET",
                 "SANDBOX_OIDC_REDIRECT_URL", "SANDBOX_OIDC_EMAIL_DOMAINS")


def secure_url(url: str) -> bool:
    """https, or http to a loopback address (a provider on the same host); no fragment."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return False
    if not host or parts.fragment or not ONE_LINE.fullmatch(url) or " " in url:
        return False
    if parts.scheme == "https":
        return True
    if parts.scheme != "http":
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class SettingsError(SandboxError, ValueError):
    """A setting broke its rule; the message names the variable and the rule."""

    code = "bad_setting"

    def __init__(self, variable: str, rule: str) -> None:
        self.variable, self.rule = variable, rule
        super().__init__(f"{variable}: {rule}")


class WitnessSetting(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(pattern=r"^https?://[^\s]+$")
    vkey: str = Field(min_length=1, pattern=r"^[^\s]+$")


class Settings(BaseSettings):
    """One field per ``SANDBOX_<NAME>`` variable; docs/operations.md has the table."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, env_ignore_empty=True, extra="ignore",
                                      allow_inf_nan=False, validate_default=True)

    # -- serving (`sandbox serve`) -----------------------------------------------------
    host: str = Field(default="127.0.0.1", pattern=r"^[A-Za-z0-9.:_-]{1,253}$")
    port: int = Field(default=8080, ge=1, le=65535)
    # Unset: fitted to the CPUs this process may use (default_workers).
    workers: int | None = Field(default=None, ge=1, le=64)
    # 8, however many workers: an agent's long poll holds a thread for up to
    # agent_poll_wait_s, and kept-alive connections stay with the worker that accepted
    # them, so a worker's other callers need threads beside its polls.
    threads: int = Field(default=8, ge=1, le=256)
    keepalive_s: int = Field(default=5, ge=1, le=300)
    worker_timeout_s: int = Field(default=30, ge=5, le=3600)
    graceful_timeout_s: int = Field(default=30, ge=1, le=3600)
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    proxy_hops: int = Field(default=0, ge=0, le=5)
    hsts: Literal["auto", "always", "off"] = "auto"
    hsts_max_age_s: int = Field(default=31_536_000, ge=0, le=63_072_000)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    metrics_dir: Path | None = None

    # -- web UI (sandbox/web, docs/web-ui.md) -------------------------------------------
    web_idle_s: int = Field(default=30 * 60, ge=60, le=86_400)
    web_lifetime_s: int = Field(default=12 * 3600, ge=300, le=7 * 86_400)
    web_cookie_secure: Literal["auto", "always"] = "auto"

    # -- state ---------------------------------------------------------------------------
    instance: Path = Field(default_factory=lambda: Path.cwd() / "var")
    database_url: str | None = None
    db_pool_size: int = Field(default=5, ge=1, le=200)
    db_max_overflow: int = Field(default=10, ge=0, le=200)
    log_origin: str = Field(default="data-sandbox.local/log", min_length=1, max_length=200,
                            pattern=ONE_LINE.pattern)
    log_key_file: Path | None = None
    log_key: SecretStr | None = None
    # Key-encryption keys for what is sealed at rest (compute/sealing.py): a keyring file,
    # or the keyring itself (secret); unset: sealing.key beside the SQLite file, or in the
    # instance directory, created on first start.
    sealing_key_file: Path | None = None
    sealing_key: SecretStr | None = None
    system_name: str = Field(default="data-sandbox controller", min_length=1, max_length=200,
                             pattern=ONE_LINE.pattern)

    # -- requests ------------------------------------------------------------------------
    max_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1024, le=1024 * 1024 * 1024)
    agent_poll_wait_s: float = Field(default=10.0, ge=0, le=60)
    schema_check_wait_s: float = Field(default=20.0, ge=0, le=120)
    database_retry_after_s: int = Field(default=5, ge=1, le=3600)
    auth_failures_per_address_per_min: int = Field(default=20, ge=1, le=100_000)
    auth_failures_per_token_per_min: int = Field(default=100, ge=1, le=100_000)
    token_requests_per_min: int = Field(default=0, ge=0, le=1_000_000)
    metrics_token: SecretStr | None = None

    # -- ledger and joint statistics ---------------------------------------------------
    checkpoint_interval_s: float = Field(default=0.2, ge=0.05, le=60)
    leader_retry_s: float = Field(default=5.0, ge=0.1, le=300)
    witnesses: Annotated[list[WitnessSetting], NoDecode] = Field(default_factory=list)
    witness_quorum: int = Field(default=0, ge=0)
    # No joint job has more providers than the masking decodes exactly (compute/masking.py).
    joint_min_providers: int = Field(default=DEFAULT_MIN_PROVIDERS, ge=2, le=MAX_PROVIDERS)

    # -- people --------------------------------------------------------------------------
    # People must be identified and hold a current accreditation to request, submit and
    # review (SATRE); off only where another system vouches for them.
    accreditation_required: bool = True
    # GET /api/v1/public/projects: approved uses, without personal data.
    publish_projects: bool = True
    # OpenID Connect sign-in (sandbox/oidc.py): off unless the issuer is set, and then every
    # one of these is required. Only people the operator added can sign in this way.
    oidc_issuer: str | None = Field(default=None, max_length=500)
    oidc_client_id: str | None = Field(default=None, min_length=1, max_length=255,
                                       pattern=r"^[\x21-\x7e]+$")
    oidc_client_secret: SecretStr | None = None
    oidc_redirect_url: str | None = Field(default=None, max_length=2000)
    # The email domains this identity provider speaks for: a verified email outside them
    # never links an account to a person.
    oidc_email_domains: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # -- readiness -----------------------------------------------------------------------
    ready_checkpoint_max_age_s: float = Field(default=60.0, ge=1, le=86_400)
    ready_witness_timeout_s: float = Field(default=2.0, ge=0.1, le=30)

    @field_validator("instance")
    @classmethod
    def _absolute(cls, v: Path) -> Path:
        # Flask wants an absolute instance path; a relative one is taken from the
        # working directory at start, as before.
        return v.absolute()

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, v: object) -> object:
        return v.upper() if isinstance(v, str) else v

    @field_validator("witnesses", mode="before")
    @classmethod
    def _json_list(cls, v: object) -> object:
        if isinstance(v, str):
            try:
                v = json.loads(v)
            except ValueError:
                raise ValueError('must be a JSON list of {"url", "vkey"}') from None
        if not isinstance(v, list):
            raise ValueError('must be a JSON list of {"url", "vkey"}')
        return v

    @field_validator("metrics_token")
    @classmethod
    def _bearer(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and not BEARER.fullmatch(v.get_secret_value()):
            raise ValueError("must be 32-256 characters of A-Z a-z 0-9 . _ ~ + / = -")
        return v

    @field_validator("sealing_key")
    @classmethod
    def _keyring(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None:
            try:
                if not parse_keyring(v.get_secret_value(), "value"):
                    raise SealingError("empty")
            except SealingError:
                raise ValueError("must be one or more <id>:<base64 of 32 bytes> entries, "
                                 "comma-separated, oldest first") from None
        return v

    @field_validator("oidc_issuer", "oidc_redirect_url")
    @classmethod
    def _oidc_url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not secure_url(v):
            raise ValueError("must be an https:// URL (http:// only to a loopback address), "
                             "without a fragment")
        return v

    @field_validator("oidc_client_secret")
    @classmethod
    def _client_secret(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and not re.fullmatch(r"[\x21-\x7e]{1,512}", v.get_secret_value()):
            raise ValueError("must be 1-512 printable characters without spaces")
        return v

    @field_validator("oidc_email_domains", mode="before")
    @classmethod
    def _domains(cls, v: object) -> object:
        if isinstance(v, str):
            v = [d.strip().lower() for d in v.split(",") if d.strip()]
        if not isinstance(v, list) or not all(
                isinstance(d, str) and DOMAIN.fullmatch(d) for d in v):
            raise ValueError("must be a comma-separated list of domain names "
                             "(example.org,lab.example.org)")
        return v

    @field_validator("database_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            backend = make_url(v).get_backend_name()
        except ArgumentError:
            raise ValueError("must be a database URL (sqlite:///PATH or "
                             "postgresql+psycopg://USER:PASSWORD@HOST/NAME)") from None
        if backend not in ("sqlite", "postgresql"):
            raise ValueError("must be a sqlite:// or postgresql:// URL")
        return v

    # -- what the rest of the controller reads ----------------------------------------

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.instance / 'sandbox.db'}"

    @property
    def effective_log_key_file(self) -> Path:
        return self.log_key_file or self.instance / "log.key"

    @property
    def effective_metrics_dir(self) -> Path:
        return self.metrics_dir or self.instance / "metrics"

    @property
    def tls(self) -> bool:
        return self.tls_cert_file is not None

    def serving_shape(self, workers: int | None = None, threads: int | None = None
                      ) -> tuple[int, int]:
        """The workers and threads ``sandbox serve`` runs: the arguments, else the
        settings; workers unset are fitted to the machine (:func:`default_workers`)."""
        return workers or self.workers or default_workers(), threads or self.threads


# One process runs Python on one core at a time (the GIL): one worker per usable CPU, at
# least 2 (a worker restarting leaves another serving), at most 8 (each holds its own
# pools, caches and database connections). Two per CPU was measured and not kept: on 2 CPUs,
# 4 workers served no more reads than 2 beside the agents and PostgreSQL, for more CPU
# per request (docs/performance.md, "Workers per CPU").
WORKERS_PER_CPU = 1
MAX_DEFAULT_WORKERS = 8


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask, narrowed by a cgroup v2 CPU quota
    (a container's limit), rounded up."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, -(-int(quota) // int(period)))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


def default_workers(cpus: int | None = None) -> int:
    """``SANDBOX_WORKERS`` when unset: one per usable CPU, 2 to 8."""
    n = usable_cpus() if cpus is None else cpus
    return max(2, min(MAX_DEFAULT_WORKERS, WORKERS_PER_CPU * n))


def _variable(loc: tuple[int | str, ...]) -> str:
    return PREFIX + str(loc[0]).upper() if loc else PREFIX + "*"


def _rule(err: dict[str, Any]) -> str:
    msg = str(err["msg"])
    msg = msg.removeprefix("Value error, ")
    inner = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"][1:])
    return f"{inner.lstrip('.')}: {msg}" if inner else msg


def load_settings() -> Settings:
    """Read and check every ``SANDBOX_*`` variable; SettingsError names the first bad one."""
    try:
        settings = Settings()
    except ValidationError as e:
        first = e.errors()[0]
        raise SettingsError(_variable(first["loc"]), _rule(dict(first))) from None
    except SourceError as e:
        # Raised by the environment source itself, before validation; its text quotes
        # the field's name, not the value.
        field = re.search(r'field "([a-z_]+)"', str(e))
        raise SettingsError(PREFIX + (field.group(1).upper() if field else "*"),
                            "could not be read") from None
    check(settings)
    return settings


def check(s: Settings) -> None:
    """Rules that span several settings, or look at the file system."""
    if (s.tls_cert_file is None) != (s.tls_key_file is None):
        missing = "SANDBOX_TLS_KEY_FILE" if s.tls_key_file is None else "SANDBOX_TLS_CERT_FILE"
        raise SettingsError(missing, "TLS needs both SANDBOX_TLS_CERT_FILE and "
                                     "SANDBOX_TLS_KEY_FILE, or neither")
    for name, path in (("SANDBOX_TLS_CERT_FILE", s.tls_cert_file),
                       ("SANDBOX_TLS_KEY_FILE", s.tls_key_file)):
        if path is not None and not (path.is_file() and os.access(path, os.R_OK)):
            raise SettingsError(name, "must name a readable file")
    path = s.sealing_key_file
    if s.sealing_key is None and path is not None and not (
            path.is_file() and os.access(path, os.R_OK)):
        raise SettingsError("SANDBOX_SEALING_KEY_FILE", "must name a readable key file "
                                                        "(create one with `sandbox keys init`)")
    if s.witness_quorum > len(s.witnesses):
        raise SettingsError("SANDBOX_WITNESS_QUORUM",
                            f"must be between 0 and the number of SANDBOX_WITNESSES "
                            f"({len(s.witnesses)})")
    oidc = {"SANDBOX_OIDC_CLIENT_ID": s.oidc_client_id,
            "SANDBOX_OIDC_CLIENT_SECRET": s.oidc_client_secret,
            "SANDBOX_OIDC_REDIRECT_URL": s.oidc_redirect_url,
            "SANDBOX_OIDC_EMAIL_DOMAINS": s.oidc_email_domains or None}
    if s.oidc_issuer is not None:
        for name in OIDC_REQUIRED:
            if oidc[name] is None:
                raise SettingsError(name, "OIDC sign-in (SANDBOX_OIDC_ISSUER is set) needs "
                                          + ", ".join(OIDC_REQUIRED))
    else:
        for name in OIDC_REQUIRED:
            if oidc[name] is not None:
                raise SettingsError(name, "is set but SANDBOX_OIDC_ISSUER is not: set the "
                                          "issuer to turn OIDC sign-in on, or unset this")
    if s.ready_checkpoint_max_age_s <= s.checkpoint_interval_s:
        raise SettingsError("SANDBOX_READY_CHECKPOINT_MAX_AGE_S",
                            "must be longer than SANDBOX_CHECKPOINT_INTERVAL_S")


def flask_config(s: Settings) -> dict[str, Any]:
    """The app's config keys, as ``create_app`` sets them before a test's overrides."""
    return {
        "DATABASE_URL": s.effective_database_url,
        "DB_POOL_SIZE": s.db_pool_size,
        "DB_MAX_OVERFLOW": s.db_max_overflow,
        "LOG_ORIGIN": s.log_origin,
        "LOG_KEY_FILE": str(s.effective_log_key_file),
        "LOG_KEY": s.log_key.get_secret_value() if s.log_key else None,
        "SEALING_KEY_FILE": str(s.sealing_key_file) if s.sealing_key_file else None,
        "SEALING_KEY": s.sealing_key.get_secret_value() if s.sealing_key else None,
        "AUTHORIZING_SYSTEM": s.system_name,
        "MAX_CONTENT_LENGTH": s.max_body_bytes,
        # Sent as Retry-After with the 503 answered while the database cannot be reached.
        "DATABASE_RETRY_AFTER_S": s.database_retry_after_s,
        "CHECKPOINT_INTERVAL_S": s.checkpoint_interval_s,
        "START_CHECKPOINTER": True,
        "LEADER_RETRY_S": s.leader_retry_s,
        "AGENT_POLL_WAIT_S": s.agent_poll_wait_s,
        "SCHEMA_CHECK_WAIT_S": s.schema_check_wait_s,
        "JOINT_MIN_PROVIDERS": s.joint_min_providers,
        "ACCREDITATION_REQUIRED": s.accreditation_required,
        "PUBLISH_PROJECTS": s.publish_projects,
        "OIDC_ISSUER": s.oidc_issuer,
        "OIDC_CLIENT_ID": s.oidc_client_id,
        "OIDC_CLIENT_SECRET": s.oidc_client_secret.get_secret_value()
        if s.oidc_client_secret else None,
        "OIDC_REDIRECT_URL": s.oidc_redirect_url,
        "OIDC_EMAIL_DOMAINS": list(s.oidc_email_domains),
        # With a quorum k > 0 a result is released only under a checkpoint k of the
        # witnesses cosigned.
        "WITNESSES": [w.model_dump() for w in s.witnesses],
        "WITNESS_QUORUM": s.witness_quorum,
        "PROXY_HOPS": s.proxy_hops,
        "HSTS": s.hsts,
        "HSTS_MAX_AGE_S": s.hsts_max_age_s,
        "AUTH_FAILURES_PER_ADDRESS_PER_MIN": s.auth_failures_per_address_per_min,
        "AUTH_FAILURES_PER_TOKEN_PER_MIN": s.auth_failures_per_token_per_min,
        "TOKEN_REQUESTS_PER_MIN": s.token_requests_per_min,
        "METRICS_TOKEN": s.metrics_token.get_secret_value() if s.metrics_token else None,
        "READY_CHECKPOINT_MAX_AGE_S": s.ready_checkpoint_max_age_s,
        "READY_WITNESS_TIMEOUT_S": s.ready_witness_timeout_s,
        "WEB_IDLE_S": s.web_idle_s,
        "WEB_LIFETIME_S": s.web_lifetime_s,
        "WEB_COOKIE_SECURE": s.web_cookie_secure,
    }


def masked(s: Settings) -> dict[str, Any]:
    """Every setting by variable name, as in effect; secrets shown only as set or not."""
    out: dict[str, Any] = {}
    for name in Settings.model_fields:
        value = getattr(s, name)
        if isinstance(value, SecretStr):
            value = MASK
        elif isinstance(value, Path):
            value = str(value)
        elif name == "witnesses":
            value = [w.model_dump() for w in value]
        out[PREFIX + name.upper()] = value
    out["SANDBOX_DATABASE_URL"] = make_url(s.effective_database_url).render_as_string(
        hide_password=True)
    out["SANDBOX_LOG_KEY_FILE"] = str(s.effective_log_key_file)
    out["SANDBOX_METRICS_DIR"] = str(s.effective_metrics_dir)
    out["SANDBOX_WORKERS"], out["SANDBOX_THREADS"] = s.serving_shape()
    return out


def unknown_variables(environ: dict[str, str] | None = None) -> list[str]:
    """``SANDBOX_*`` names set but not read by anything: most likely misspelt."""
    env = os.environ if environ is None else environ
    known = {PREFIX + n.upper() for n in Settings.model_fields} | CLIENT_VARIABLES \
        | AGENT_VARIABLES
    return sorted(n for n in env if n.upper().startswith(PREFIX) and n.upper() not in known)
