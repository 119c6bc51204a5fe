"""`lunabase console`: open the operator console on a running ground."""

from __future__ import annotations

import argparse
from typing import Any

DESCRIPTION = """\
The operator console: a live, keyboard-driven view of the lunar base served by a running
ground segment (`lunabase ground`).  It only talks to the ground's client interface
(HTTP + WebSocket); it never decodes packets or judges limits itself.  When the ground
restarts the top line shows RECONNECTING and the console catches up by itself.
"""

EPILOG = """\
screens (press the digit from anywhere; ? shows this inside the console):
  1 Base      every node: ONLINE / ASLEEP→next contact / STALE / LOST, mode, battery
              SOC and voltage, temperatures, packet rate, errors/gaps/duplicates, last
              contact; values coloured by limit state. Enter opens the node.
  2 Node      engineering values with units and limit colours; p plots the highlighted
              parameter (up to 3 at once), w shows the seismic waveform, [ and ] change node
  3 Alarms    active alarms worst first: a acknowledge, s shelve, u unshelve; event log below
  4 Command   pick node + command, fill arguments (checked against the dictionary),
              Ctrl+S sends, hazardous commands ask for y; stages QUEUED→SENT→ACCEPTED→EXECUTED
  5 Packets   latest raw packets of the node: hex beside the decoded fields (f freezes)
  6 Links     per-link packet/byte rates, errors by reason, rejected bytes, gaps, duplicates

keys: arrows/PgUp/PgDn move, Enter opens, Tab moves focus, ? help, q quits.
colours: green ok, black-on-yellow = yellow limit, white-on-red = red limit.

examples:
  lunabase console                                   the ground on this machine (port 8700)
  lunabase console --ground http://10.0.0.5:8700     a ground elsewhere
  lunabase console --user alice                      log in as alice (password prompt)

login: $LUNABASE_TOKEN, $LUNABASE_USER + $LUNABASE_PASSWORD, ~/.config/lunabase/credentials
(written by `lunabase login`), or a prompt before the console opens.  Acknowledgements and
commands are recorded under that account; hazardous commands wait AWAITING_APPROVAL until
another commander approves them (lunabase approve ID).
  lunabase demo                                      a simulated base, ground and this console
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``console`` subcommand."""
    p = sub.add_parser(
        "console",
        help="the operator console (Textual): nodes, alarms, commanding, packets, links",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--ground", default="http://127.0.0.1:8700", metavar="URL",
                   help="the ground's client interface (default: %(default)s)")
    p.add_argument("--user", default=None, help="account to log in as (default: from the credential, or asked)")
    p.add_argument("--ca", default=None, help="for an https:// ground: the CA (PEM) its certificate must chain to")
    p.add_argument("--poll", type=float, default=2.0, metavar="S",
                   help="seconds between safety-net re-reads of nodes/alarms/links (default: %(default)s)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Handler: run the console until the operator quits."""
    return run_console(args.ground, user=args.user, poll_s=args.poll, ca=args.ca)


def run_console(url: str, user: str | None = None, poll_s: float = 2.0, ca: str | None = None,
                credentials: Any = None) -> int:
    """Open the console on the ground at ``url``; returns an exit code."""
    import asyncio

    from ground.auth.credentials import load_credentials
    from ground.client import ApiError, GroundClient
    from ground.console.app import ConsoleApp

    # before Textual takes the terminal
    creds = credentials if credentials is not None else load_credentials(url, user=user, prompt=True)
    # a short request timeout: a hung ground shows RECONNECTING within seconds, not half a minute
    client = GroundClient(url, credentials=creds, timeout=10.0, ca=ca)

    async def check() -> None:
        try:
            await client.login()
        finally:
            await client.close()
            client._login_lock = None  # made again on the console's own loop

    try:
        asyncio.run(check())
    except ApiError as e:
        if e.status in (401, 403, 429):  # a wrong password: say so instead of a console that shows nothing
            print(f"lunabase console: {e.message}", flush=True)
            return 1
    app = ConsoleApp(client, url, user=client.user or creds.user, poll_s=poll_s)
    app.run()
    return 0
