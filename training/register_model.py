"""Command line for the model registry: history, promote, rollback.

    python -m training.register_model history [--json] [--limit N]
    python -m training.register_model promote [--version N] [--force] [--reason TEXT]
    python -m training.register_model rollback --to-version N [--reason TEXT]

The registry itself is `training.registry`; the gates a version passes at training are
`training.gates`. Every promotion and rollback is a row in `promotion_audit`.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from data.db import database_error_message
from data.logs import configure_logging
from data.settings import exit_on_config_error, get_settings
from training.registry import (
    CHALLENGER,
    CHAMPION,
    Registry,
    RegistryError,
    history,
    promote,
    rollback,
)


def _print_history(data: dict[str, Any]) -> None:
    aliases = data["aliases"]

    def shown(version: str | None) -> str:
        return f"v{version}" if version else "none"

    print(
        f"model {data['model_name']}: @champion = {shown(aliases[CHAMPION])}, "
        f"@challenger = {shown(aliases[CHALLENGER])}\n"
    )
    print("version  created (UTC)        gates   roc_auc  aliases")
    for v in data["versions"]:
        print(
            f"{v['version']:>7}  {v['created_at'][:19]:<19}  {v['gates_passed'] or '-':<6}  "
            f"{v['roc_auc'] or '-':<7.7}  {', '.join(v['aliases'])}"
        )
    print("\naudit (newest first)")
    if not data["audit"]:
        print("  (no promotions, rejections or rollbacks yet)")
    for row in data["audit"]:
        print(
            f"  {row['created_at'][:19]}  v{row['version']:<4} {row['action']:<10} "
            f"by {row['actor']}: {row['reason']}"
        )


@exit_on_config_error
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.register_model",
        description="Promote, roll back and inspect registered model versions.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_promote = sub.add_parser("promote", help="move @champion to a version (default @challenger)")
    p_promote.add_argument("--version", help="version to promote (default: the @challenger)")
    p_promote.add_argument("--force", action="store_true", help="promote despite failed gates")
    p_promote.add_argument("--reason", default="manual promotion")
    p_promote.add_argument("--actor", default=None, help="who is doing this (default: $USER)")
    p_rollback = sub.add_parser("rollback", help="move @champion back to an earlier version")
    p_rollback.add_argument("--to-version", required=True)
    p_rollback.add_argument("--reason", default="manual rollback")
    p_rollback.add_argument("--actor", default=None, help="who is doing this (default: $USER)")
    p_history = sub.add_parser("history", help="versions, aliases, gates and the audit trail")
    p_history.add_argument("--json", action="store_true", help="print JSON")
    p_history.add_argument("--limit", type=int, default=50)
    args = parser.parse_args(argv)
    configure_logging(get_settings(), process="register-model", command=True)
    try:
        registry = Registry.from_settings()
        actor = getattr(args, "actor", None) or getpass.getuser()
        if args.command == "promote":
            if args.force and args.reason == "manual promotion":
                raise RegistryError("--force needs a --reason saying why the gates are overridden")
            mv = promote(registry, args.version, actor=actor, reason=args.reason, force=args.force)
            print(f"{registry.model_name} v{mv.version} is now @champion")
        elif args.command == "rollback":
            mv = rollback(registry, args.to_version, actor=actor, reason=args.reason)
            print(f"{registry.model_name} rolled back: v{mv.version} is now @champion")
        else:
            data = history(registry, args.limit)
            if args.json:
                print(json.dumps(data, indent=2, default=str))
            else:
                _print_history(data)
    except RegistryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except SQLAlchemyError as exc:  # the audit table's database (DATABASE_URL) is unavailable
        print(f"error: {database_error_message(exc)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
