"""ENF session server.

python run.py                 serve on ENF_HOST:ENF_PORT (default)
python run.py migrate         apply database migrations
python run.py token --sub ID --type customer|enp|admin [--kyc]
                              print a token signed with ENF_JWT_SECRET
python run.py verify-journal SESSION_ID | --file JOURNAL.json --envelope ENVELOPE.json
                              recompute a session's hash chain (database, or offline)
python run.py verify-envelope FILE [--public-key KEY]
python run.py verify-audit    recompute the audit log's hash chain
python run.py cluster status  nodes, shards, actors per shard, gateways (ENF_CLUSTER=ray)
python run.py cluster rebalance
                              spread the shards over the cluster's nodes
python run.py cluster stop    once the gateways are stopped: every shard snapshotted
                              and ended, the recorders ended (nothing keeps a connection)
python run.py --env-file F …  read the ENF_* settings from F
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from config.logging import setup_logging
from config.settings import Settings
from core.ids import session_address

logger = logging.getLogger("enf")

# Each command imports what it needs inside its function (not to dodge a
# cycle: there is none): `run.py token` or `verify-envelope` must not load
# the server, Ray or aiortc.


def unsafe_setup(settings: Settings, command: str) -> str | None:
    """Why `command` must not run with these settings (None: it may). What
    cannot work is refused before anything starts, so nothing is left running."""
    ray_address = settings.ray_address or os.environ.get("RAY_ADDRESS")
    if command == "cluster":
        if settings.cluster != "ray":
            return "the cluster commands need the cluster's settings: ENF_CLUSTER=ray (--env-file)"
        if not ray_address:
            return "the cluster commands need ENF_RAY_ADDRESS (the Ray head's address)"
    if settings.cluster == "ray" and not settings.database_url:
        return (
            "ENF_CLUSTER=ray needs ENF_DATABASE_URL: every node must share one database"
            " (an embedded Postgres would be this process's alone)"
        )
    return None


def resolve_database(settings: Settings) -> tuple[str, Any]:
    """ENF_DATABASE_URL, or an embedded Postgres under ENF_DATA_DIR."""
    if settings.database_url:
        return settings.database_url, None
    from persistence.embedded import start_embedded_postgres

    return start_embedded_postgres(settings.data_dir)


async def serve(settings: Settings) -> None:
    from aiohttp import web

    from gateway.app import create_app

    secret, generated = settings.resolve_jwt_secret()
    refusal = settings.weak_secret(secret)
    if refusal is not None and not settings.allow_weak_secret:
        logger.error("cannot start: %s", refusal)
        print(f"cannot start: {refusal}", file=sys.stderr, flush=True)
        raise SystemExit(2)
    if refusal is not None:
        logger.warning("ENF_ALLOW_WEAK_SECRET is set: %s", refusal)
    dsn, embedded = resolve_database(settings)
    if generated:
        logger.warning(
            "ENF_JWT_SECRET is unset: using the generated key in %s; mint a dev token with "
            "`python run.py token --sub alice --type customer --kyc`",
            settings.data_dir / "jwt.secret",
        )
    from config.tracing import setup_tracing, shutdown_tracing

    setup_tracing()
    app = create_app(settings, dsn, secret)
    runner = web.AppRunner(app, shutdown_timeout=3.0, handle_signals=False, access_log=None)
    try:
        await runner.setup()
    except (RuntimeError, ValueError) as exc:  # a setting or a service that is not there
        logger.error("cannot start: %s", exc)
        print(f"cannot start: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    site = web.TCPSite(runner, settings.host, settings.port)
    await site.start()
    host, port = settings.host, settings.port
    for addr in runner.addresses:
        if isinstance(addr, tuple):
            host, port = addr[0], addr[1]
            break
    # Everything allocated at start-up lives as long as the process: keep it out
    # of the collector's scans, and collect the young generation less often
    # (many short-lived frames and events per request).
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):  # before anyone is told it listens
        loop.add_signal_handler(sig, stop.set)
    print(f"listening on http://{host}:{port}", flush=True)
    logger.info("listening on http://%s:%s", host, port)
    await stop.wait()
    logger.info("shutting down")
    # SIGTERM means gone within 10 s: a resource that cannot close in time is
    # named in the log and left behind (the journal holds what was acknowledged).
    cleanup = asyncio.ensure_future(runner.cleanup())
    done, _ = await asyncio.wait({cleanup}, timeout=8)
    if not done:
        for t in asyncio.all_tasks():
            if t is not asyncio.current_task():
                logger.error("still running at exit: %s", _stack(t))
        logging.shutdown()
        os._exit(0)
    shutdown_tracing()
    del embedded  # the embedded Postgres keeps running for the next start
    logger.info("stopped")


def _stack(task: asyncio.Task[Any]) -> str:
    import io

    out = io.StringIO()
    task.print_stack(limit=8, file=out)
    return out.getvalue()


async def migrate(settings: Settings) -> None:
    from persistence.migrate import apply_migrations
    from persistence.pool import create_pool

    dsn, _embedded = resolve_database(settings)
    pool = await create_pool(dsn, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            applied = await apply_migrations(conn)
    finally:
        await pool.close()
    print("applied: " + (", ".join(applied) if applied else "nothing (up to date)"))


async def verify_journal_cmd(settings: Settings, target: str) -> int:
    import uuid

    from persistence.pool import create_pool
    from persistence.verify import verify_journal

    actor_id = target
    with contextlib.suppress(ValueError):
        actor_id = session_address(str(uuid.UUID(target)))
    dsn, _embedded = resolve_database(settings)
    pool = await create_pool(dsn, min_size=1, max_size=1)
    try:
        report = await verify_journal(pool, actor_id)
    finally:
        await pool.close()
    if report.rows == 0 and report.valid:
        print(f"{actor_id}: no journal rows (no such session?)")
        return 2
    print(report.describe())
    return 0 if report.valid else 1


def verify_journal_file_cmd(journal_path: str, envelope_path: str, public_key: str | None) -> int:
    """Offline: an exported journal against the head its signed envelope
    attests (and, with --public-key, the envelope's signature)."""
    from persistence.verify import ExportError, verify_export

    try:
        journal, signed = _read_json(journal_path), _read_json(envelope_path)
        keys = _public_keys(public_key) if public_key else None
        report = verify_export(journal, signed, keys)
    except ExportError as exc:
        print(exc)
        return 2
    print(report.describe())
    if keys is None:
        print("(the envelope's signature was not checked: --public-key KEY checks it)")
    return 0 if report.valid else 1


def _read_json(path: str) -> Any:
    """The JSON in `path`; ExportError (one line) when it cannot be read."""
    from persistence.verify import ExportError

    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ExportError(f"cannot read {path}: {exc}") from None


def _public_keys(path: str) -> Any:
    """The keys in a PEM file or the JSON of GET /v1/keys; ExportError (one line)."""
    from persistence.keys import load_public_keys
    from persistence.verify import ExportError

    try:
        return load_public_keys(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ExportError(f"cannot read the public key {path}: {exc}") from None


async def verify_audit_cmd(settings: Settings) -> int:
    from persistence.audit_chain import verify_audit
    from persistence.pool import create_pool

    dsn, _embedded = resolve_database(settings)
    pool = await create_pool(dsn, min_size=1, max_size=1)
    try:
        report = await verify_audit(pool)
    finally:
        await pool.close()
    print(report.describe())
    return 0 if report.valid else 1


def verify_envelope_cmd(settings: Settings, path: str, public_key: str | None) -> int:
    """Offline: only the envelope file and a public key (PEM, or the JSON of
    GET /v1/keys); without --public-key, this server's own key."""
    from persistence.keys import Signer, verify_signed
    from persistence.verify import ExportError

    try:
        signed = _read_json(path)
        keys = _public_keys(public_key) if public_key else None
    except ExportError as exc:
        print(exc)
        return 2
    if keys is None:
        keys = [Signer.load(settings.signing_key_file, settings.data_dir).public]
    valid, reason = verify_signed(signed, keys)
    uid = signed.get("envelope", {}).get("uid") if isinstance(signed, dict) else None
    print(f"{uid or path}: VALID" if valid else f"{uid or path}: INVALID: {reason}")
    return 0 if valid else 1


async def cluster_cmd(settings: Settings, action: str, as_json: bool) -> int:
    from cluster import ops as clusterops
    from persistence.pool import create_pool

    dsn, _embedded = resolve_database(settings)
    pool = await create_pool(dsn, min_size=1, max_size=2)
    try:
        if action == "status":
            report = await clusterops.status(settings, pool)
            print(json.dumps(report, indent=2) if as_json else format_status(report))
            return 0
        if action == "stop":
            stopped = await clusterops.stop_cluster(settings, pool)
            if as_json:
                print(json.dumps(stopped))
            for s in [] if as_json else stopped["shards"]:
                done = s["snapshotted"]
                print(
                    f"shard {s['shard']}: "
                    + ("not running" if done is None else f"stopped, {done} actors snapshotted")
                )
            for r in [] if as_json else stopped["recorders"]:
                print(f"recorder {r['recorder']}: stopped")
            return 0
        moves = await clusterops.rebalance(settings, pool, dsn)
        if as_json:
            print(json.dumps(moves))
        elif not moves:
            print("balanced already: nothing to move")
        for m in [] if as_json else moves:
            tries = ", ".join(n[:12] for n in m["attempts"])
            outcome = "moved" if m["placed"] else "NOT PLACED (it runs where the last try landed)"
            print(
                f"shard {m['shard']}: {outcome} from {str(m['from'])[:12]} to {m['node_id'][:12]}"
                f" ({len(m['attempts'])} attempts, landed on: {tries})"
            )
        return 0 if all(m["placed"] for m in moves) else 1
    except (LookupError, RuntimeError) as exc:
        print(f"cluster {action}: {exc}", file=sys.stderr)
        return 2
    finally:
        await pool.close()


def format_status(report: dict[str, Any]) -> str:
    lines = [f"shard map: {report['shard_count']} shards, epoch {report['map_epoch']}", "nodes:"]
    for n in report["nodes"]:
        lines.append(
            f"  {n['node_id'][:12]}  {n['address']}  cpus={n['cpus']:g}  shards={n['shards']}"
        )
    lines.append("shards:")
    for s in report["shards"]:
        if "error" in s:
            lines.append(f"  {s['shard']:>3}  {s['state']:<10}  {s['error']}")
            continue
        node = (s.get("node_id") or "?")[:12]
        lines.append(
            f"  {s['shard']:>3}  {s['state']:<10}  node={node}  pid={s['pid']}  epoch={s['epoch']}"
            f"  actors={s['actors']}  up={s['uptime_s']}s"
            f"  keys={','.join(f'{k}:{v}' for k, v in sorted((s.get('keys') or {}).items()))}"
        )
    lines.append("gateways:")
    for g in report["gateways"]:
        lines.append(f"  {g['gateway_id']}  {g.get('url')}  connections={g.get('connections')}")
    if not report["gateways"]:
        lines.append("  (none heard from)")
    lines.extend(f"error: {e}" for e in report["errors"])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="run.py", description="ENF session server")
    parser.add_argument(
        "--env-file",
        help="read ENF_* settings from this file (KEY=value lines); the environment wins",
    )
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="serve HTTP and WebSocket (the default)")
    sub.add_parser("migrate", help="apply database migrations")
    tok = sub.add_parser("token", help="print a signed client token for trying it out")
    tok.add_argument("--sub", required=True, help="user id")
    tok.add_argument("--type", required=True, choices=["customer", "enp", "admin"])
    tok.add_argument("--kyc", action="store_true", help="kyc_verified: true")
    tok.add_argument("--name")
    tok.add_argument(
        "--ttl", type=int, help="seconds (default 1 day, or ENF_MAX_TOKEN_TTL_S if shorter)"
    )
    vj = sub.add_parser("verify-journal", help="recompute a session's hash chain")
    vj.add_argument("session_id", nargs="?", help="session id (or any actor id): from the database")
    vj.add_argument("--file", help="offline: the JSON of GET /v1/sessions/{id}/journal")
    vj.add_argument("--envelope", help="with --file: the JSON of GET /v1/envelopes/{id}")
    vj.add_argument("--public-key", help="with --file: check the envelope's signature too")
    sub.add_parser("verify-audit", help="recompute the audit log's hash chain")
    ve = sub.add_parser("verify-envelope", help="verify a signed TRUTH envelope offline")
    ve.add_argument("file", help="the signed envelope (JSON from GET /v1/envelopes/{id})")
    ve.add_argument("--public-key", help="PEM file, or the JSON of GET /v1/keys")
    cl = sub.add_parser("cluster", help="operate a Ray cluster (ENF_CLUSTER=ray settings)")
    cl.add_argument("action", choices=["status", "rebalance", "stop"])
    cl.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)

    try:
        settings = Settings(_env_file=args.env_file) if args.env_file else Settings()
    except ValueError as exc:  # pydantic's ValidationError: one line per bad setting
        print(f"cannot start: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level, settings.log_format)
    refusal = unsafe_setup(settings, args.command or "serve")
    if refusal is not None:
        print(f"cannot start: {refusal}", file=sys.stderr)
        return 2
    if args.command == "token":
        from gateway.auth import mint_token

        secret, _ = settings.resolve_jwt_secret()
        extra = {"name": args.name} if args.name else {}
        ttl = args.ttl or int(min(24 * 3600, settings.max_token_ttl_s))
        print(mint_token(secret, args.sub, args.type, kyc=args.kyc, ttl_s=ttl, **extra))
        return 0
    if args.command == "verify-envelope":
        return verify_envelope_cmd(settings, args.file, args.public_key)
    if args.command == "verify-journal" and (args.file or args.envelope):
        if not (args.file and args.envelope) or args.session_id:
            parser.error("verify-journal takes SESSION_ID, or --file and --envelope (not both)")
        return verify_journal_file_cmd(args.file, args.envelope, args.public_key)
    if args.command == "verify-journal" and not args.session_id:
        parser.error("verify-journal needs SESSION_ID, or --file and --envelope")
    import uvloop

    if args.command == "verify-journal":
        return uvloop.run(verify_journal_cmd(settings, args.session_id))
    if args.command == "verify-audit":
        return uvloop.run(verify_audit_cmd(settings))
    if args.command == "cluster":
        return asyncio.run(cluster_cmd(settings, args.action, args.json))
    runner = migrate if args.command == "migrate" else serve
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(runner(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
