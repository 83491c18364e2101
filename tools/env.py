"""The compose stack's secrets: `make env` writes them, the `preflight` service refuses bad ones.

    python -m tools.env write [--force] [--out .env]   # .env from .env.example, secrets generated
    python -m tools.env check                           # the environment's secrets; exit 1 if bad

`write` copies `.env.example` with every secret of `SECRETS` replaced by a generated one: the
Fernet key as Airflow wants it (urlsafe base64 of 32 random bytes), the label tokens as one
`chargebacks=<token>` pair, every other secret `secrets.token_urlsafe(32)` (43 characters of
`A-Z a-z 0-9 - _`, safe inside a database URL). It never replaces an existing file unless told
(`--force`, which keeps the old one as `<file>.bak`).

`check` is what docker-compose.yml's one-shot `preflight` service runs before anything else
starts, whatever ENVIRONMENT says: it names every secret that is missing, a placeholder
(`changeme`, ...), shorter than `MIN_LENGTH` characters, or (the Fernet key) not a Fernet key,
and exits 1. The service runs this file on the stock `python:3.11-slim` image, so it uses the
standard library only and imports nothing of the project.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import os
import re
import secrets
import sys
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Shorter than this is refused: 16 characters of a random token are ~96 bits, out of reach of
# guessing over the network; a human-chosen word is usually shorter.
MIN_LENGTH = 16
# Values that mean "nobody filled this in" (data/settings.py refuses the same ones).
PLACEHOLDERS = frozenset({"changeme", "change-me", "changethis", "secret", "password", "xxx"})
FERNET = "fernet"
LABELS = "labels"
TOKEN = "token"
# Every secret docker-compose.yml reads from .env, and its kind.
SECRETS: dict[str, str] = {
    "POSTGRES_PASSWORD": TOKEN,
    "MONITORING_DB_PASSWORD": TOKEN,
    "MLFLOW_DB_PASSWORD": TOKEN,
    "AIRFLOW_DB_PASSWORD": TOKEN,
    "GRAFANA_DB_PASSWORD": TOKEN,
    "GRAFANA_ADMIN_PASSWORD": TOKEN,
    "AIRFLOW_ADMIN_PASSWORD": TOKEN,
    "AIRFLOW_FERNET_KEY": FERNET,
    "AIRFLOW_SECRET_KEY": TOKEN,
    "AIRFLOW_JWT_SECRET": TOKEN,
    "API_ADMIN_TOKEN": TOKEN,
    "LABEL_TOKENS": LABELS,
}


def generate_secret(kind: str) -> str:
    if kind == FERNET:
        return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
    if kind == LABELS:
        return f"chargebacks={secrets.token_urlsafe(32)}"
    return secrets.token_urlsafe(32)


def generate(example: str) -> str:
    """`.env.example`'s text with a fresh value for every secret of `SECRETS`."""
    for name, kind in SECRETS.items():
        example, count = re.subn(
            rf"^{name}=.*$",
            lambda _, n=name, k=kind: f"{n}={generate_secret(k)}",
            example,
            flags=re.M,
        )
        if count != 1:
            raise ValueError(f"{name} is not (once) in .env.example")
    return example


def _weak(value: str) -> str | None:
    """Why a token cannot be a secret, or None."""
    if value.strip().lower() in PLACEHOLDERS or "changeme" in value.lower():
        return "a placeholder"
    if len(value) < MIN_LENGTH:
        return f"shorter than {MIN_LENGTH} characters"
    return None


def problems(environ: Mapping[str, str]) -> list[str]:
    """One line per bad secret of `SECRETS` in `environ`, naming it and what is wrong."""
    found = []
    for name, kind in SECRETS.items():
        value = environ.get(name, "")
        if not value:
            found.append(f"{name} is not set")
        elif kind == LABELS:
            for pair in value.split(","):
                source, equals, token = pair.strip().partition("=")
                why = "not a source=token pair" if not (equals and source) else _weak(token)
                if why:
                    found.append(f"{name}: source {source or pair!r}'s token is {why}")
        elif kind == FERNET:
            why = _weak(value)
            try:
                key = base64.urlsafe_b64decode(value.encode())
            except (binascii.Error, ValueError):
                key = b""
            if why or len(key) != 32:
                found.append(
                    f"{name} is {why or 'not a Fernet key'} (urlsafe base64 of 32 random bytes)"
                )
        else:
            why = _weak(value)
            if why:
                found.append(f"{name} is {why}")
    return found


def check(environ: Mapping[str, str]) -> int:
    found = problems(environ)
    if not found:
        print(f"preflight: the {len(SECRETS)} secrets are set, none a placeholder or short")
        return 0
    print(f"preflight: refusing to start the stack: {len(found)} bad secret(s) in .env:",
          file=sys.stderr)  # fmt: skip
    for line in found:
        print(f"  {line}", file=sys.stderr)
    print("Generate them with `make env` (a new .env; `make env FORCE=1` replaces yours, kept "
          "as .env.bak), or set each by hand (see .env.example).", file=sys.stderr)  # fmt: skip
    return 1


def write(out: Path, example: Path, force: bool) -> int:
    if out.exists() and not force:
        print(f"{out} exists: left as it is (`make env FORCE=1` replaces it, keeping the old one "
              f"as {out.name}.bak)", file=sys.stderr)  # fmt: skip
        return 1
    text = generate(example.read_text())
    if out.exists():
        backup = out.with_name(out.name + ".bak")
        out.replace(backup)
        print(f"{out} kept as {backup}")
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    print(f"wrote {out} with {len(SECRETS)} generated secrets (mode 0600): "
          "now `docker compose up -d --build`")  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.env", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    writer = sub.add_parser("write", help=".env from .env.example with generated secrets")
    writer.add_argument("--out", type=Path, default=ROOT / ".env")
    writer.add_argument("--example", type=Path, default=ROOT / ".env.example")
    writer.add_argument("--force", action="store_true", help="replace an existing file")
    sub.add_parser("check", help="refuse placeholder, short or missing secrets (exit 1)")
    args = parser.parse_args(argv)
    if args.command == "write":
        return write(args.out, args.example, args.force)
    return check(os.environ)


if __name__ == "__main__":
    sys.exit(main())
