"""Roles, privileges and the two-person policy: the one table the whole ground checks.

A role is a set of privileges plus the command-name patterns (``fnmatch``, like Yamcs'
command privileges) it may send; an account holds one or more roles and gets the union.
Sending a hazardous command needs ``command.hazardous`` from a role whose patterns match
too.  ``admin`` manages accounts, links and the archive but does not command: the person
who can make accounts is not also the one who can reboot a node (separation of duties).

    may_send(["operator"], "PING", hazardous=False)      # True
    may_send(["operator"], "REBOOT", hazardous=True)     # False: needs commander
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

# -- privileges (route and command checks name these; docs/ground-api.md lists them) --------
PUBLIC = "public"                     # the login/refresh routes: they take the credential themselves
READ = "read"                         # telemetry, events, alarms, command history, links, dictionary
ALARMS = "alarms.manage"              # acknowledge / shelve / unshelve
COMMAND = "command"                   # send (non-hazardous) commands matching the role's patterns
COMMAND_HAZARDOUS = "command.hazardous"  # send hazardous commands
COMMAND_APPROVE = "command.approve"   # approve / deny someone else's command under the two-person rule
COMMAND_CANCEL_ANY = "command.cancel_any"  # cancel another account's queued command (own: COMMAND)
ACCOUNTS = "accounts.manage"          # list accounts, mint/revoke keys for others
LINKS = "links.manage"                # link maintenance
ARCHIVE = "archive.manage"            # archive maintenance (retention, export of everything)
DISPLAYS = "displays.manage"          # save/delete the web console's shared displays (layouts)

PRIVILEGES = (READ, ALARMS, COMMAND, COMMAND_HAZARDOUS, COMMAND_APPROVE, COMMAND_CANCEL_ANY, ACCOUNTS, LINKS,
              ARCHIVE, DISPLAYS)


@dataclass(frozen=True)
class Role:
    """Privileges of one role and the command names (fnmatch patterns) it may send."""

    privileges: frozenset[str]
    commands: tuple[str, ...] = ()
    description: str = ""


ROLES: dict[str, Role] = {
    "viewer": Role(frozenset({READ}), (), "telemetry, events, alarms, history"),
    "operator": Role(frozenset({READ, ALARMS, COMMAND, DISPLAYS}), ("*",),
                     "viewer + acknowledge/shelve alarms + non-hazardous commands"),
    "commander": Role(frozenset({READ, ALARMS, COMMAND, COMMAND_HAZARDOUS, COMMAND_APPROVE, COMMAND_CANCEL_ANY,
                                 DISPLAYS}),
                      ("*",), "operator + hazardous commands + approving others' commands"),
    "admin": Role(frozenset({READ, ACCOUNTS, LINKS, ARCHIVE, DISPLAYS}), (),
                  "viewer + accounts, links, archive maintenance (no commanding)"),
}


def check_roles(roles: Iterable[str]) -> list[str]:
    """The roles, de-duplicated in table order; ValueError naming an unknown one."""
    rs = list(roles)
    bad = [r for r in rs if r not in ROLES]
    if bad:
        raise ValueError(f"unknown role {bad[0]!r} (roles: {', '.join(ROLES)})")
    return [r for r in ROLES if r in rs]


def privileges(roles: Iterable[str]) -> frozenset[str]:
    """Union of the privileges of ``roles`` (unknown names grant nothing)."""
    out: set[str] = set()
    for r in roles:
        role = ROLES.get(r)
        if role is not None:
            out |= role.privileges
    return frozenset(out)


def has(roles: Iterable[str], privilege: str) -> bool:
    return privilege in privileges(roles)


def _grants(roles: Iterable[str], privilege: str, command: str, table: Mapping[str, Role]) -> bool:
    for r in roles:
        role = table.get(r)
        if role is not None and privilege in role.privileges and \
                any(fnmatch.fnmatchcase(command, p) for p in role.commands):
            return True
    return False


def may_send(roles: Iterable[str], command: str, hazardous: bool, table: Mapping[str, Role] = ROLES) -> bool:
    """Whether an account with ``roles`` (defined in ``table``, default ``ROLES``) may send ``command``."""
    rs = list(roles)
    return _grants(rs, COMMAND, command, table) and (not hazardous or _grants(rs, COMMAND_HAZARDOUS, command, table))


def may_approve(roles: Iterable[str], command: str, hazardous: bool) -> bool:
    """Approving needs ``command.approve`` and the right to send that command oneself."""
    rs = list(roles)
    return has(rs, COMMAND_APPROVE) and may_send(rs, command, hazardous)


def needed_role(privilege: str) -> str:
    """The least role granting ``privilege`` (for error messages)."""
    for name, role in ROLES.items():
        if privilege in role.privileges:
            return name
    return "none"


@dataclass
class TwoPersonPolicy:
    """Which commands wait for a second account's approval.

    Default: every hazardous command.  ``require`` adds name patterns (hazardous or not);
    ``exempt`` removes patterns (an explicit, logged choice of whoever runs the ground).
    """

    hazardous: bool = True
    require: list[str] = field(default_factory=list)
    exempt: list[str] = field(default_factory=list)
    timeout: float = 600.0  # s an approval may take before the command EXPIRES

    def applies(self, command: str, hazardous: bool) -> bool:
        if any(fnmatch.fnmatchcase(command, p) for p in self.exempt):
            return False
        return (hazardous and self.hazardous) or any(fnmatch.fnmatchcase(command, p) for p in self.require)
