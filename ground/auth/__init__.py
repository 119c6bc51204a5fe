"""Who may do what on the ground: accounts, roles, sessions and the client interface's guard.

    store = AccountStore.open("lunabase-users.json")          # 0600, or InsecureFile
    auth = Auth(store, allowed_hosts=["ground.example"])
    server = ApiServer(ops, auth=auth)                         # every route checked

- ``roles``: the role -> privilege table and command-name patterns (one place), the
  two-person policy.
- ``accounts``: the secrets file (scrypt password hashes, hashed API keys, audit of changes).
- ``sessions``: access/refresh/cookie tokens, the failed-login limiter.
- ``web``: ``Auth`` (middleware + /api/auth/* routes), ``requires`` for route handlers.
- ``credentials``: the client side (credentials file, environment, prompt).

Errors (one root)::

    AuthError
    ├── InsecureFile    a secrets/credentials file others can read, or not a regular file
    └── AccountError    a refused account change (also a ValueError)
"""

from ground.auth.accounts import Account, AccountError, AccountStore, AuthError, InsecureFile
from ground.auth.roles import ROLES, TwoPersonPolicy, may_approve, may_send
from ground.auth.sessions import LoginLimiter, Sessions
from ground.auth.web import COOKIE, IDENTITY, Auth, Identity, identity, requires

__all__ = ["COOKIE", "IDENTITY", "ROLES", "Account", "AccountError", "AccountStore", "Auth", "AuthError", "Identity",
           "InsecureFile", "identity", "LoginLimiter", "Sessions", "TwoPersonPolicy", "may_approve", "may_send", "requires"]
