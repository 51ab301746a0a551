"""`programusers serve` runs the request API (programusers/api) under uvicorn; `programusers audit` lists
the signed links it handed out."""
from __future__ import annotations

import argparse
import json
import logging
import os
import socket
from datetime import timedelta

from programusers import settings
from programusers.api.app import ApiSettings, create_app
from programusers.api.audit import LinkAudit
from programusers.api.tokens import TokenVerifier
from programusers.commands.report import (
    _azure_flags,
    _config,
    _expiry,
    job_request_flags,
    report_store,
    store_endpoints,
)
from programusers.io import postgres
from programusers.report.request_store import RequestStore
from programusers.report.store import DEFAULT_LINK_EXPIRY

_LOG = logging.getLogger(__name__)
_ARGS_VARIABLE = "PROGRAMUSERS_SERVE_ARGS"  # how `serve --workers N` hands its flags to each worker process


def _audit_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--audit-table", default=settings.LINK_AUDIT_TABLE,
                        help=f"default: ${settings.variable('LINK_AUDIT_TABLE')}, else "
                             + settings.default("LINK_AUDIT_TABLE"))


def api_settings(args: argparse.Namespace) -> ApiSettings:
    if not args.token_keys:
        raise ValueError(f"the token keys are needed: --token-keys DIR or ${settings.variable('TOKEN_KEYS')}")
    config = _config(args)
    args.store = args.container = None  # the model config's store, as the exhaust publishes to it
    pool = postgres.ConnectionPool(args.postgres_dsn)  # a worker's requests share its connections
    return ApiSettings(verifier=TokenVerifier(args.token_keys, args.token_issuer),
                       requests=RequestStore(args.postgres_dsn, args.job_request_table, pool=pool),
                       audit=LinkAudit(args.postgres_dsn, args.audit_table, pool), config=config,
                       store=report_store(args, config), link_expiry=args.link_expiry, endpoints=store_endpoints(args))


_SHARED = ("token_keys", "token_issuer", "config", "azure_blob_endpoint", "s3_endpoint", "postgres_dsn",
           "job_request_table", "audit_table")


def app_from_environment():
    """uvicorn's factory in each worker process of `serve --workers N`: the settings `serve` was given."""
    given = json.loads(os.environ[_ARGS_VARIABLE])
    expiry = timedelta(seconds=given.pop("expiry_s"))
    return create_app(api_settings(argparse.Namespace(**given, link_expiry=expiry)))


def _serve(args) -> int:
    import uvicorn

    try:
        app = create_app(api_settings(args))
        # Bound here, so that --port 0 (the system picks) can say which port it got.
        listening = socket.create_server((args.host, args.port))
    except (ValueError, OSError) as exc:
        _LOG.error("serve cannot start: %s", exc)
        return 2
    host, port = listening.getsockname()[:2]
    _LOG.info("the request API listens on http://%s:%d (%d worker(s))", host, port, args.workers)
    if args.workers > 1:  # worker processes: each builds the app from the same settings
        os.environ[_ARGS_VARIABLE] = json.dumps({**{name: getattr(args, name) for name in _SHARED},
                                                 "expiry_s": args.link_expiry.total_seconds()})
        uvicorn.run(f"{__name__}:app_from_environment", factory=True, workers=args.workers, fd=listening.fileno(),
                    access_log=False, log_config=None)
    else:
        uvicorn.Server(uvicorn.Config(app, access_log=False, log_config=None)).run(sockets=[listening])
    return 0


def _audit(args) -> int:
    for entry in LinkAudit(args.postgres_dsn, args.audit_table).entries(
            request_id=args.request_id, user_id=args.user, limit=args.limit):
        print(json.dumps({k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in entry.items()}))
    return 0


def _serve_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--workers", type=int, default=1, help="worker processes (production: about one a core)")
    parser.add_argument("--token-keys", default=settings.TOKEN_KEYS, metavar="DIR",
                        help=f"folder of the RSA public keys that sign user tokens, <kid>.pem each (default: "
                             f"${settings.variable('TOKEN_KEYS')})")
    parser.add_argument("--token-issuer", default=settings.TOKEN_ISSUER,
                        help=f"when set, a token's iss must be this (default: ${settings.variable('TOKEN_ISSUER')})")
    parser.add_argument("--link-expiry", type=_expiry, default=DEFAULT_LINK_EXPIRY, metavar="DURATION",
                        help="how long a signed link opens its report (default 30m, as the platform's)")
    _azure_flags(parser)
    job_request_flags(parser)
    _audit_flags(parser)


def register(subcommands) -> None:
    serve = subcommands.add_parser("serve", help="run the request API (submit, read, list) over HTTP")
    _serve_flags(serve)
    serve.set_defaults(handler=_serve)

    audit = subcommands.add_parser("audit", help="list the signed links the request API handed out")
    audit.add_argument("--request-id")
    audit.add_argument("--user")
    audit.add_argument("--limit", type=int, default=1000)
    job_request_flags(audit)
    _audit_flags(audit)
    audit.set_defaults(handler=_audit)

