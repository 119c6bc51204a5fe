"""``lunabase users ...`` (accounts in the ground's secrets file) and ``lunabase login`` (a client credential)."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path
from typing import Any

DEFAULT_USERS = os.environ.get("LUNABASE_USERS", "lunabase-users.json")

USERS_EPILOG = """\
examples:
  lunabase users add alice --role admin                 the first admin (asks for a password)
  lunabase users add bob --role operator --role viewer
  lunabase users add hil-bot --role operator --service  no password: API keys only
  lunabase users token hil-bot --label "CI runner"      print a new API key (shown once)
  lunabase users token hil-bot --revoke 3fa2c1d0        revoke one key
  lunabase users passwd bob ; lunabase users roles bob commander ; lunabase users remove bob
  lunabase users list

roles: viewer (telemetry, events, alarms, history), operator (+ ack/shelve alarms,
non-hazardous commands), commander (+ hazardous commands, approving others' commands),
admin (accounts, links, archive maintenance; no commanding).

The file (--file, $LUNABASE_USERS, default ./lunabase-users.json) is written 0600; the
ground refuses to start on a group/world-readable one.  A running ground re-reads it
within a second: a removed account, a changed password or a revoked key stops working.
Passwords come from a prompt, or from $LUNABASE_NEW_PASSWORD for scripts.
"""

LOGIN_EPILOG = """\
examples:
  lunabase login                                 the ground on this machine (port 8700)
  lunabase login --api http://10.0.0.5:8700 --user alice

Logs in with your password, mints a personal API key on the ground ("lunabase login
on HOST") and stores it in ~/.config/lunabase/credentials (0600), which the console,
`lunabase command`, GroundClient and the HIL tools read.  Run it again to rotate the key
(then revoke the old one: lunabase users token NAME --revoke ID, or on the ground).
"""


def _by() -> str:
    """Who changed the file: the local OS account (the file's access is the authority)."""
    try:
        return f"local:{getpass.getuser()}"
    except Exception:  # no passwd entry in a container
        return f"local:uid{os.getuid()}"


def _new_password(name: str) -> str:
    env = os.environ.get("LUNABASE_NEW_PASSWORD")
    if env:
        return env
    if not sys.stdin.isatty():
        raise SystemExit("lunabase users: no terminal to ask a password on; set LUNABASE_NEW_PASSWORD")
    pw = getpass.getpass(f"new password for {name}: ")
    if getpass.getpass("again: ") != pw:
        raise SystemExit("lunabase users: the passwords differ")
    return pw


def register(sub: Any) -> None:
    u = sub.add_parser("users", help="accounts of the ground (add, passwd, roles, list, remove, token)",
                       description="Manage the ground's accounts (the secrets file).", epilog=USERS_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    u.add_argument("--file", default=DEFAULT_USERS, help="accounts file (default: %(default)s)")
    us = u.add_subparsers(dest="action", metavar="ACTION", required=True)
    a = us.add_parser("add", help="a new account")
    a.add_argument("name")
    a.add_argument("--role", action="append", required=True, help="viewer, operator, commander, admin (repeat)")
    a.add_argument("--service", action="store_true", help="no password: a service account using API keys")
    p = us.add_parser("passwd", help="set a password (--none: API keys only)")
    p.add_argument("name")
    p.add_argument("--none", action="store_true")
    r = us.add_parser("roles", help="replace an account's roles")
    r.add_argument("name")
    r.add_argument("roles", nargs="+")
    us.add_parser("list", help="accounts, roles and key ids (never a secret)")
    rm = us.add_parser("remove", help="delete an account (its keys and sessions stop working)")
    rm.add_argument("name")
    t = us.add_parser("token", help="mint an API key (printed once), or --revoke ID")
    t.add_argument("name")
    t.add_argument("--label", default="", help="what the key is for")
    t.add_argument("--revoke", metavar="ID", default=None)
    u.set_defaults(func=run_users)

    lg = sub.add_parser("login", help="log in to a ground and store an API key in ~/.config/lunabase/credentials",
                        description="Log in to a ground and store a personal API key for the clients.",
                        epilog=LOGIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    lg.add_argument("--api", default=os.environ.get("LUNABASE_API", "http://127.0.0.1:8700"))
    lg.add_argument("--user", default=None)
    lg.set_defaults(func=run_login)


def run_users(a: argparse.Namespace) -> int:
    from ground.auth.accounts import AccountError, AccountStore, AuthError

    path = Path(a.file)
    try:
        store = AccountStore.open(path, create=a.action == "add")
        by = _by()
        if a.action == "add":
            pw = None if a.service else _new_password(a.name)
            acc = store.add(a.name, pw, a.role, by=by)
            print(f"{acc.name}: roles {', '.join(acc.roles)}" + (" (service account: mint a key with "
                  f"lunabase users token {acc.name})" if a.service else "") + f"; file {path} (0600)")
        elif a.action == "passwd":
            store.set_password(a.name, None if a.none else _new_password(a.name), by=by)
            print(f"{a.name}: password {'removed' if a.none else 'changed'}; the ground ends its sessions")
        elif a.action == "roles":
            store.set_roles(a.name, a.roles, by=by)
            print(f"{a.name}: roles {', '.join(store.get(a.name).roles)}")
        elif a.action == "list":
            for acc in store.users.values():
                keys = ", ".join(f"{k['id']}" + (f" ({k['label']})" if k.get("label") else "") for k in acc.keys)
                print(f"{acc.name:16} {','.join(acc.roles):24} {'password' if acc.password else 'no password':12} "
                      f"keys: {keys or '-'}")
        elif a.action == "remove":
            store.remove(a.name, by=by)
            print(f"{a.name}: removed")
        elif a.action == "token":
            if a.revoke:
                store.revoke_key(a.name, a.revoke, by=by)
                print(f"{a.name}: key {a.revoke} revoked")
            else:
                key = store.create_key(a.name, a.label, by=by)
                print(key)
                print(f"(API key for {a.name}; shown only now. Clients: LUNABASE_TOKEN=... or "
                      "'token = ...' in ~/.config/lunabase/credentials)", file=sys.stderr)
    except (AccountError, AuthError, FileNotFoundError) as e:
        print(f"lunabase users: {e}", file=sys.stderr)
        return 1
    return 0


def run_login(a: argparse.Namespace) -> int:
    import asyncio
    import socket

    from ground.auth.credentials import Credentials, save_credentials
    from ground.client import ApiError, GroundClient

    user = a.user or input(f"lunabase user for {a.api} [{getpass.getuser()}]: ").strip() or getpass.getuser()
    pw = os.environ.get("LUNABASE_PASSWORD") or getpass.getpass(f"password for {user}: ")

    async def main() -> dict[str, Any]:
        async with GroundClient(a.api, credentials=Credentials(user, pw, None, "prompt")) as g:
            await g.login()
            key = await g.create_key(pw, f"lunabase login on {socket.gethostname()}")
            await g.logout()
            return key

    try:
        key = asyncio.run(main())
    except ApiError as e:
        print(f"lunabase login: {e.message}" + (f" (HTTP {e.status})" if e.status else ""), file=sys.stderr)
        return 1
    p = save_credentials(a.api, user=user, token=key["key"])
    print(f"logged in to {a.api} as {user}; API key {key['id']} stored in {p} (0600)")
    return 0
