"""``aftd``: serve, check-config, gen-apikey, secrets check, db migrate."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from aftd import __version__
from aftd.apikeys import digest, generate_key
from aftd.config import Config, load_config
from aftd.errors import ConfigError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="aftd", description="aftd: automated file transfer daemon")
    p.add_argument("--version", action="version", version=f"aftd {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = sub.add_parser("serve", help="run the daemon")
    serve.add_argument("--config", metavar="FILE", help="TOML config (default: embedded defaults)")
    serve.add_argument("--log-format", choices=("json", "console"), default=None,
                       help="override logging.format (console is for humans)")
    check = sub.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("--config", metavar="FILE", required=True)
    gen = sub.add_parser("gen-apikey", help="print a new API key and the digest for the config")
    gen.add_argument("--name", default="orchestrator", help="name for the config snippet")
    sec = sub.add_parser("secrets", help="secret tools")
    sec_sub = sec.add_subparsers(dest="secrets_command", required=True, metavar="COMMAND")
    sc = sec_sub.add_parser("check", help="tell which provider resolves each name (no values)")
    sc.add_argument("names", nargs="+", metavar="NAME")
    sc.add_argument("--config", metavar="FILE")
    db = sub.add_parser("db", help="fleet database tools")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="COMMAND")
    mig = db_sub.add_parser("migrate", help="apply the schema migrations [store] url needs")
    mig.add_argument("--config", metavar="FILE", required=True)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        from aftd.daemon import serve

        return serve(args.config, args.log_format)
    if args.command == "check-config":
        return _check_config(args.config)
    if args.command == "gen-apikey":
        return _gen_apikey(args.name)
    if args.command == "db":
        return _db_migrate(args.config)
    return _secrets_check(args.config, args.names)


def _load(path: str | None) -> Config | None:
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"aftd: config error: {exc}", file=sys.stderr)
        return None


def _check_config(path: str) -> int:
    cfg = _load(path)
    if cfg is None:
        return 1
    for label, p in (("server.tls_cert", cfg.server.tls_cert), ("server.tls_key",
                                                                 cfg.server.tls_key)):
        if p is not None and not p.is_file():
            print(f"aftd: config error: {path}: {label}: file {p} does not exist", file=sys.stderr)
            return 1
    if not cfg.paths.scripts_dir.is_dir():
        print(f"aftd: warning: {path}: paths.scripts_dir: {cfg.paths.scripts_dir} does not exist",
              file=sys.stderr)
    print(f"{path}: OK ({len(cfg.api_keys)} API keys, {len(cfg.vfs)} VFS, "
          f"secrets order {', '.join(cfg.secrets.order)})")
    return 0


def _gen_apikey(name: str) -> int:
    key = generate_key()
    print(f"API key (give this to the client; it is not stored): {key}")
    print(f"SHA-256 (put this in the config): {digest(key)}")
    print()
    print("[[auth.api_keys]]")
    print(f'name = "{name}"')
    print(f'sha256 = "{digest(key)}"')
    print('allow_from = ["127.0.0.1/32", "::1/128"]')
    return 0


def _secrets_check(path: str | None, names: Sequence[str]) -> int:
    cfg = _load(path)
    if cfg is None:
        return 1
    from aftd.secrets.cli import run_check

    return run_check(cfg.secrets, names, sys.stdout)


def _db_migrate(path: str) -> int:
    cfg = _load(path)
    if cfg is None:
        return 1
    from aftd.store.migrate_cli import run_migrate

    return run_migrate(cfg, sys.stdout, sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
