"""The stack's configuration: the one place that reads the environment.

Every package (data, training, monitoring, api, the DAGs) calls `get_settings()`; nothing else
touches `os.environ`. The settings are grouped by concern into sections (`StoreSettings`,
`DriftSettings`, ...), which `Settings` combines: one flat namespace, so each variable keeps its
name and `settings.X` works whatever section X is in. Every field carries its meaning as its
description; `python -m data.settings --reference > docs/configuration.md` writes the reference
page from them, and `.env.example` lists every variable with a comment. Defaults are the embedded
ones (`make demo`: SQLite and a local MLflow store under `var/`); compose overrides them with
Postgres and the MLflow server. Outside `ENVIRONMENT=development` placeholder secrets are refused
at start, so a copied `.env.example` cannot reach production unnoticed.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Callable
from functools import lru_cache, wraps
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic import (
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url

from data.settings_sections import (
    PROJECT_ROOT,
    SECTIONS,
    AlertSettings,
    DriftSettings,
    EmailSettings,
    EnvironmentSettings,
    ExporterSettings,
    GateSettings,
    LabelSettings,
    LogSettings,
    ModelSettings,
    NotificationSettings,
    RetentionSettings,
    RetrainSettings,
    ServingSettings,
    StoreSettings,
)

# Values that mean "nobody filled this in"; `.env.example` uses the first one.
PLACEHOLDER_SECRETS = frozenset(
    {"changeme", "change-me", "changethis", "secret", "password", "xxx"}
)


# Secrets the API refuses to start without outside ENVIRONMENT=development (the reference shows
# them so): it serves the endpoints they guard. The other processes (the exporter, the DAG tasks)
# never use them and run without (Settings.require_api_secrets).
REQUIRED_OUTSIDE_DEVELOPMENT = frozenset({"API_ADMIN_TOKEN", "LABEL_TOKENS"})


class ConfigError(ValueError):
    """The environment (or `.env`) holds settings the stack cannot run with; the message names
    each variable and says what is wrong with it, in one line."""


# Every section is a base of `Settings`, listed from the last to the first: pydantic collects
# fields from the far end of the MRO, so `Settings.model_fields` (and a report of several invalid
# values) follows the order of SECTIONS. Listed by name, not unpacked from SECTIONS, so that
# editors and type checkers see every field (tests/test_settings_sections.py checks the two
# agree).
class Settings(
    LogSettings,
    NotificationSettings,
    EmailSettings,
    AlertSettings,
    ServingSettings,
    ExporterSettings,
    RetentionSettings,
    LabelSettings,
    RetrainSettings,
    DriftSettings,
    GateSettings,
    ModelSettings,
    StoreSettings,
    EnvironmentSettings,
    BaseSettings,
):
    """Typed view of the environment: every section's fields in one flat namespace (see
    `.env.example` and docs/configuration.md for every variable)."""

    # An empty variable (`SMTP_PASSWORD=` in a copied .env.example, `${VAR:-}` in compose)
    # means unset: the default applies, not an empty value.
    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", case_sensitive=True, env_ignore_empty=True
    )

    @model_validator(mode="after")
    def _refuse_unsafe_production_config(self) -> Settings:
        if self.PSI_WARNING >= self.PSI_CRITICAL:
            raise ValueError(
                f"PSI_WARNING ({self.PSI_WARNING}) must be below PSI_CRITICAL ({self.PSI_CRITICAL})"
            )
        if self.WASSERSTEIN_WARNING >= self.WASSERSTEIN_CRITICAL:
            raise ValueError(
                f"WASSERSTEIN_WARNING ({self.WASSERSTEIN_WARNING}) must be below "
                f"WASSERSTEIN_CRITICAL ({self.WASSERSTEIN_CRITICAL})"
            )
        # Half an email setup would skip every email without a word; said at start instead.
        email = {
            "SMTP_HOST": self.SMTP_HOST,
            "ALERT_EMAIL_FROM": self.ALERT_EMAIL_FROM,
            "ALERT_EMAIL_TO": self.ALERT_EMAIL_TO,
        }
        if any(email.values()) and not all(email.values()):
            missing = ", ".join(name for name, value in email.items() if not value)
            raise ValueError(
                f"email alerts need SMTP_HOST, ALERT_EMAIL_FROM and ALERT_EMAIL_TO: {missing} unset"
            )
        if self.SMTP_PASSWORD is not None and not self.SMTP_USER:
            raise ValueError("SMTP_PASSWORD is set without SMTP_USER")
        label_tokens = self.label_tokens
        # A placeholder shared by both (a copied .env.example) is development's business: it is
        # refused below everywhere else.
        if self.API_ADMIN_TOKEN is not None:
            admin = self.API_ADMIN_TOKEN.get_secret_value()
            for source, token in label_tokens.items():
                if token.get_secret_value() == admin and not _is_placeholder(admin):
                    raise ValueError(
                        f"LABEL_TOKENS: the token of source {source!r} is API_ADMIN_TOKEN; label "
                        "writers need tokens of their own (the admin token never writes labels)"
                    )
        if self.is_development:
            return self
        secrets = {
            "API_ADMIN_TOKEN": self.API_ADMIN_TOKEN,
            "SLACK_WEBHOOK_URL": self.SLACK_WEBHOOK_URL,
            "PAGERDUTY_ROUTING_KEY": self.PAGERDUTY_ROUTING_KEY,
            "ALERT_WEBHOOK_URL": self.ALERT_WEBHOOK_URL,
            "SMTP_PASSWORD": self.SMTP_PASSWORD,
            **{f"LABEL_TOKENS (source {s!r})": token for s, token in label_tokens.items()},
        }
        for name, value in secrets.items():
            if value is not None and _is_placeholder(value.get_secret_value()):
                raise ValueError(
                    f"{name} is a placeholder; set a real secret when "
                    f"ENVIRONMENT={self.ENVIRONMENT}"
                )
        db_password = make_url(self.DATABASE_URL).password
        if db_password is not None and _is_placeholder(db_password):
            raise ValueError(
                f"DATABASE_URL uses a placeholder password; set a real one when "
                f"ENVIRONMENT={self.ENVIRONMENT}"
            )
        return self

    def require_api_secrets(self) -> None:
        """`ConfigError` naming API_ADMIN_TOKEN or LABEL_TOKENS if one is unset outside
        development: the API's start calls it; the exporter and the DAG tasks, which never use
        them, run without (a Helm or compose deployment gives them only to the API)."""
        if self.is_development:
            return
        missing = [
            name for name in sorted(REQUIRED_OUTSIDE_DEVELOPMENT) if getattr(self, name) is None
        ]
        if missing:
            raise ConfigError(
                f"{' and '.join(missing)} must be set for the API when "
                f"ENVIRONMENT={self.ENVIRONMENT}"
            )

    def path(self, value: str) -> Path:
        """Resolve a configured path against the project root, so CWD does not matter."""
        candidate = Path(value)
        return candidate if candidate.is_absolute() else PROJECT_ROOT / candidate


def _is_placeholder(value: str) -> bool:
    return value.strip().lower() in PLACEHOLDER_SECRETS


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment once; `ConfigError` if invalid."""
    try:
        return Settings()
    except ValidationError as exc:
        raise ConfigError(describe_errors(exc)) from None


def describe_errors(exc: ValidationError) -> str:
    """pydantic's multi-line report as one line: `NAME: problem (got value)` per setting."""
    problems = []
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] != "value_error":  # pydantic's own messages do not quote the value
            message += f" (got {error['input']!r})"
        if error["loc"]:  # one setting's; a model validator's message names its settings
            message = f"{error['loc'][0]}: {message}"
        problems.append(message)
    return "invalid configuration: " + "; ".join(problems)


def exit_on_config_error(main: Callable[..., int]) -> Callable[..., int]:
    """For a command's `main`: invalid settings end it with their one-line message and status 2,
    not a traceback."""

    @wraps(main)
    def checked(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2

    return checked


# --- The configuration reference (`python -m data.settings --reference`) ----------------------

REFERENCE_COMMAND = "python -m data.settings --reference > docs/configuration.md"

REFERENCE_INTRO = f"""\
# Configuration reference

<!-- Generated from data/settings.py by `{REFERENCE_COMMAND}`;
     edit the field descriptions there, not this page (tests/test_docs.py compares them). -->

Every setting is an environment variable. `data/settings.py` is the one place that reads them:
one pydantic-settings class, `Settings`, read once per process through `get_settings()`, whose
fields are grouped below by concern. Every command, the API, the exporter and the DAG tasks read
the same settings.

- **Where they come from**: the environment first, then a `.env` file in the working directory
  (copy [`.env.example`](../.env.example), which lists every variable with a comment). Names are
  case-sensitive. An empty variable (`SMTP_PASSWORD=`) counts as unset: the default applies.
- **Paths**: relative paths (`FEATURE_SCHEMA`, `DATA_DIR`, ...) and relative SQLite paths in
  `DATABASE_URL` and `MLFLOW_TRACKING_URI` are resolved against the repository root, so every
  process finds the same file whatever its working directory.
- **Invalid values** stop every command at once, with status 2 and one line naming each
  variable:

  ```
  $ API_PORT=70000 python -m api.serve
  error: invalid configuration: API_PORT: Input should be less than 65536 (got '70000')
  ```

  Besides each variable's own range, the settings refuse: `PSI_WARNING` not below
  `PSI_CRITICAL`, `WASSERSTEIN_WARNING` not below `WASSERSTEIN_CRITICAL`, half an email setup
  (some but not all of `SMTP_HOST`, `ALERT_EMAIL_FROM`, `ALERT_EMAIL_TO`), `SMTP_PASSWORD`
  without `SMTP_USER`, an `MLFLOW_TRACKING_URI` that is a directory (`file:` or a plain path),
  and an `ALERTMANAGER_URL` that is not an http(s) URL.
  A malformed `LABEL_TOKENS` (a pair without `=`, an empty source or token, a source given
  twice, two sources sharing a token) is refused naming the pair or source, never the token,
  and so is a label token equal to `API_ADMIN_TOKEN` (unless both are the same placeholder,
  which only development tolerates).
- **Outside `ENVIRONMENT=development`** they also refuse a placeholder value (`changeme`,
  `change-me`, `changethis`, `secret`, `password` or `xxx`, in any case) in `API_ADMIN_TOKEN`,
  any token of `LABEL_TOKENS`, `SLACK_WEBHOOK_URL`, `PAGERDUTY_ROUTING_KEY`,
  `ALERT_WEBHOOK_URL` or `SMTP_PASSWORD`, and a placeholder as the password in `DATABASE_URL`;
  and the API (`python -m api.serve`, the app) refuses to start with `API_ADMIN_TOKEN` or
  `LABEL_TOKENS` unset. The exporter and the DAG tasks never use those two and run without.
- **docker compose** checks more, whatever `ENVIRONMENT` says: its one-shot `preflight`
  service (`python -m tools.env check`) refuses to let the stack start while any secret it
  reads (the database passwords, Airflow's keys and admin password, Grafana's admin password,
  `API_ADMIN_TOKEN`, `LABEL_TOKENS`) is missing, a placeholder or shorter than 16 characters;
  `make env` generates them all (see [deployment](deployment.md#docker-compose-up)).
- **Secrets** (`SecretStr`) print as `**********`; the tables below never show a value
  for them.

The variables below the `# ==== docker compose only ====` line of `.env.example` (published
ports, image tags, the databases' passwords, Airflow's and Grafana's logins) are read by
`docker-compose.yml` alone and are not settings; they are described in that file.
"""


def _format_default(name: str, field: FieldInfo) -> str:
    if SecretStr in get_args(field.annotation) or field.annotation is SecretStr:
        return (
            "unset (the API requires it outside development)"
            if name in REQUIRED_OUTSIDE_DEVELOPMENT
            else "unset"
        )
    value: Any = field.default
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if value == "":
        return "empty"
    if isinstance(value, float):
        return f"`{value:g}`"
    return f"`{value}`"


_BOUNDS = (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<"))


def _allowed(field: FieldInfo) -> str:
    """The values a field accepts beyond its type, as the reference says them."""
    choices = get_args(field.annotation) if get_origin(field.annotation) is Literal else ()
    if choices:
        return "One of " + ", ".join(f"`{choice}`" for choice in choices) + "."
    bounds = [
        f"{sign} {getattr(meta, key):g}"
        for meta in field.metadata
        for key, sign in _BOUNDS
        if getattr(meta, key, None) is not None
    ]
    return ("Allowed: " + ", ".join(bounds) + ".") if bounds else ""


def reference() -> str:
    """docs/configuration.md: the introduction, then one table per section (variable, default,
    meaning) from the fields' defaults, constraints and descriptions; never a value from the
    environment."""
    parts = [REFERENCE_INTRO]
    for title, section in SECTIONS:
        doc = textwrap.fill(
            f"{' '.join((section.__doc__ or '').split())} (`{section.__name__}`)", 100
        )
        parts.append(f"\n## {title}\n\n{doc}\n\n")
        parts.append("| variable | default | meaning |\n|---|---|---|\n")
        for name, field in section.model_fields.items():
            meaning = " ".join(f"{field.description} {_allowed(field)}".split())
            meaning = meaning.replace("|", "\\|")
            parts.append(f"| `{name}` | {_format_default(name, field)} | {meaning} |\n")
    return "".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m data.settings",
        description="The stack's settings. --reference prints the configuration reference "
        f"(Markdown): `{REFERENCE_COMMAND}`.",
    )
    parser.add_argument(
        "--reference", action="store_true", help="print docs/configuration.md to stdout"
    )
    args = parser.parse_args(argv)
    if not args.reference:
        parser.print_help(sys.stderr)
        return 2
    sys.stdout.write(reference())
    return 0


if __name__ == "__main__":
    sys.exit(main())
