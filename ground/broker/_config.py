"""Generation of mosquitto 2 configuration, password file and ACL file from an Inventory."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from wire import topics
from wire.inventory import Inventory

PBKDF2_ITERATIONS = 101  # what mosquitto_passwd 2.0 writes ($7$101$...)


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for a TLS listener: CA certificate, server certificate and its key."""

    cafile: Path
    certfile: Path
    keyfile: Path


@dataclass(frozen=True)
class BrokerFiles:
    """What write_broker_config produced."""

    config: Path
    password_file: Path
    acl_file: Path
    tls: TlsFiles | None = None


def hash_password(password: str, salt: bytes | None = None, iterations: int = PBKDF2_ITERATIONS) -> str:
    """A mosquitto 2 password hash: ``$7$<iterations>$<b64 salt>$<b64 PBKDF2-SHA512>``."""
    salt = salt if salt is not None else secrets.token_bytes(12)
    dk = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(dk).decode()}"


def _accounts(inv: Inventory) -> list[tuple[str, str]]:
    if not inv.ground_password:
        raise ValueError(f"inventory of site {inv.site}: ground_password is empty; the ground account needs one")
    return inv.ground_accounts() + [(n.id, n.password) for n in inv.nodes]


def write_private(path: str | Path, data: str | bytes) -> Path:
    """Write a file that holds a secret: mode 0600 on every save, even over an older, looser file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
    return path


def password_file_text(inv: Inventory) -> str:
    """The password file (one ``user:hash`` line per account), hashed in Python."""
    return "".join(f"{u}:{hash_password(p)}\n" for u, p in _accounts(inv))


def write_password_file(inv: Inventory, path: str | Path, use_mosquitto_passwd: bool | None = None) -> Path:
    """Write the password file (mode 0600).

    With ``mosquitto_passwd`` installed (Debian package ``mosquitto``) and
    use_mosquitto_passwd not False, the hashes come from it; otherwise from
    hash_password (the same PBKDF2-SHA512 format).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tool = shutil.which("mosquitto_passwd") if use_mosquitto_passwd is not False else None
    if use_mosquitto_passwd and not tool:
        raise FileNotFoundError("mosquitto_passwd is not installed (Debian: apt-get install mosquitto)")
    write_private(path, "")
    if tool:
        for user, pw in _accounts(inv):
            subprocess.run([tool, "-b", str(path), user, pw], check=True, capture_output=True)
    else:
        write_private(path, password_file_text(inv))
    os.chmod(path, 0o600)
    return path


def acl_text(inv: Inventory) -> str:
    """mosquitto ACL rules: each node only its own topics, the ground accounts everything + cmd writes."""
    p = topics.PREFIX
    out = [f"# lunabase ACLs for site {inv.site} (generated from the inventory; do not edit by hand)"]
    for user, _ in inv.ground_accounts():
        out += ["", f"user {user}", f"topic read {p}/#", f"topic write {p}/+/+/{topics.CMD}"]
    for n in inv.nodes:
        out += [
            "",
            f"user {n.id}",
            f"topic write {topics.topic(inv.site, n.id, topics.TM)}",
            f"topic write {topics.topic(inv.site, n.id, topics.STATUS)}",
            f"topic read {topics.topic(inv.site, n.id, topics.CMD)}",
        ]
    return "\n".join(out) + "\n"


#: mosquitto's max_packet_size in the generated config: 256 KiB of payload + topic and headers
MAX_PACKET_SIZE = 256 * 1024 + 1024


LISTENER_SECURITY = "use_username_as_clientid true"  # a per-listener option (see security_config)


def security_config(password_file: Path, acl_file: Path) -> str:
    """Lines to append to a mosquitto config *after its listener line* (e.g.
    sim.mosquitto.Mosquitto extra_config).

    ``use_username_as_clientid``: the client id is the account name, whatever the client
    asks for, so one account's credentials cannot take over (and disconnect) another
    client's session — a node can only ever be itself.  It is a listener option: before
    any ``listener`` line mosquitto 2.0 applies it to a default listener that it then opens
    on port 1883 of every interface; write_broker_config puts it in each listener.  ``max_packet_size``: no message
    larger than the ingest would accept reaches the broker's queues or the ground.
    """
    return "\n".join([
        "allow_anonymous false",
        "use_username_as_clientid true",
        f"password_file {password_file}",
        f"acl_file {acl_file}",
        "max_queued_messages 0",
        # no MQTT packet over the ingest's TM cap (256 KiB) plus headers: a node cannot make
        # the broker and the ground hold megabytes per message (the sender is disconnected)
        f"max_packet_size {MAX_PACKET_SIZE}",
    ]) + "\n"


def tls_listener(port: int, tls: TlsFiles, bind: str = "127.0.0.1") -> str:
    return "\n".join([
        f"listener {port} {bind}",
        f"cafile {tls.cafile}",
        f"certfile {tls.certfile}",
        f"keyfile {tls.keyfile}",
        "tls_version tlsv1.2",
        "require_certificate false",  # clients authenticate with their account's password
        LISTENER_SECURITY,
    ]) + "\n"


# Certificates are valid from 2000-01-01 (the wire epoch): a board whose clock was never set
# (no RTC battery, no NTP on the Moon) still accepts them; the ground's TIME_SYNC needs the
# link first.  EC P-256 keys: the smallest handshake for a node's mbedtls.
VALID_FROM = "20000101000000Z"
_CA_CNF = """[ca]
default_ca = lb
[lb]
database = index.txt
new_certs_dir = .
serial = serial
default_md = sha256
policy = pol
unique_subject = no
copy_extensions = none
[pol]
commonName = supplied
[v3_ca]
basicConstraints = critical,CA:TRUE,pathlen:0
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = {san}
"""


def _san(hosts: list[str]) -> str:
    import ipaddress

    out = []
    for h in hosts:
        try:
            ipaddress.ip_address(h)
            out.append(f"IP:{h}")
        except ValueError:
            out.append(f"DNS:{h}")
    return ",".join(out)


def make_self_signed(out_dir: str | Path, hostname: str = "localhost", days: int = 3650,
                     hosts: list[str] | None = None, renew: bool = False, ca_days: int = 36500) -> TlsFiles:
    """The site's CA and the broker's server certificate in out_dir (openssl CLI, EC P-256).

    An existing CA (``ca.crt`` + ``ca.key``) is kept, so nodes flashed with it keep working;
    the server certificate is issued when missing or with ``renew`` (for ``hostname``,
    ``hosts``, localhost and 127.0.0.1).  Both are valid from 2000-01-01; the server
    certificate for ``days``, the CA for ``ca_days``.  Key files are 0600 on every call.
    """
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    openssl = shutil.which("openssl")
    if not openssl:
        raise FileNotFoundError("openssl is not installed (Debian: apt-get install openssl)")
    names: list[str] = []
    for h in (hostname, *(hosts or []), "localhost", "127.0.0.1"):
        if h not in names:
            names.append(h)

    def run(*args: str) -> None:
        r = subprocess.run([openssl, *args], capture_output=True, cwd=d, text=True)
        if r.returncode:
            raise RuntimeError(f"openssl {args[0]} failed: {r.stderr.strip()}")

    def fresh_db() -> None:
        write_private(d / "index.txt", "")
        (d / "serial").write_text(secrets.token_hex(8) + "\n")
        (d / "ca.cnf").write_text(_CA_CNF.format(san=_san(names)))

    def newkey(name: str) -> None:
        run("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", name)
        os.chmod(d / name, 0o600)

    if not ((d / "ca.crt").exists() and (d / "ca.key").exists()):
        fresh_db()
        newkey("ca.key")
        run("req", "-new", "-key", "ca.key", "-out", "ca.csr", "-subj", "/CN=lunabase site CA")
        run("ca", "-batch", "-config", "ca.cnf", "-selfsign", "-keyfile", "ca.key", "-in", "ca.csr", "-out", "ca.crt",
            "-startdate", VALID_FROM, "-days", str(ca_days), "-extensions", "v3_ca", "-notext")
        renew = True
    if renew or not ((d / "server.crt").exists() and (d / "server.key").exists()):
        fresh_db()
        newkey("server.key")
        run("req", "-new", "-key", "server.key", "-out", "server.csr", "-subj", f"/CN={hostname}")
        enddate = time.strftime("%Y%m%d%H%M%SZ", time.gmtime(time.time() + days * 86400))
        run("ca", "-batch", "-config", "ca.cnf", "-cert", "ca.crt", "-keyfile", "ca.key", "-in", "server.csr",
            "-out", "server.crt", "-startdate", VALID_FROM, "-enddate", enddate, "-extensions", "server", "-notext")
    for k in ("ca.key", "server.key"):
        os.chmod(d / k, 0o600)  # also when kept from an earlier run
    # openssl ca's bookkeeping (database, serial, a copy of each certificate by serial)
    for junk in [*d.glob("index.txt*"), *d.glob("serial*"), *d.glob("*.csr"), d / "ca.cnf"]:
        junk.unlink(missing_ok=True)
    for pem in d.glob("*.pem"):
        if re.fullmatch(r"[0-9A-F]+\.pem", pem.name):
            pem.unlink()
    return TlsFiles(d / "ca.crt", d / "server.crt", d / "server.key")


def write_broker_config(inv: Inventory, out_dir: str | Path, port: int = 1883, bind: str = "127.0.0.1",
                        tls_port: int | None = None, tls: TlsFiles | None = None,
                        use_mosquitto_passwd: bool | None = None, user: str | None = None,
                        plaintext: bool = False, tls_hosts: list[str] | None = None,
                        renew_server_cert: bool = False) -> BrokerFiles:
    """Write mosquitto.conf, passwd and acl into out_dir; with tls_port, a TLS listener
    (the site CA and a server certificate are made in out_dir/tls when ``tls`` is not
    given, see make_self_signed) and no plaintext listener unless ``plaintext``.

    ``user``: the account mosquitto switches to when started as root (its ``user``
    option); it must be able to read passwd/acl (mode 0600) and write data/.
    """
    d = Path(out_dir).resolve()
    d.mkdir(parents=True, exist_ok=True)
    pw = write_password_file(inv, d / "passwd", use_mosquitto_passwd)
    acl = write_private(d / "acl", acl_text(inv))
    if tls_port and tls is None:
        hosts = [h for h in (tls_hosts or []) if h]
        tls = make_self_signed(d / "tls", hosts[0] if hosts else "localhost", hosts=hosts, renew=renew_server_cert)
    lines = [
        f"# mosquitto configuration for lunabase site {inv.site} (generated by `lunabase broker-config`)",
        "per_listener_settings false",
        *([f"user {user}"] if user else []),
        *(x for x in security_config(pw, acl).splitlines() if x != LISTENER_SECURITY),
        "max_inflight_messages 0",
        "persistence true",
        f"persistence_location {d}/data/",
        "autosave_interval 10",
        "persistent_client_expiration 14d",
        "connection_messages true",
        "log_type error",
        "log_type warning",
        "log_type notice",
        *([] if tls_port and not plaintext else [f"listener {port} {bind}", LISTENER_SECURITY]),
    ]
    (d / "data").mkdir(exist_ok=True)
    conf = "\n".join(lines) + "\n"
    if tls_port and tls:
        conf += tls_listener(tls_port, tls, bind)
    cfg = d / "mosquitto.conf"
    cfg.write_text(conf)
    return BrokerFiles(cfg, pw, acl, tls if tls_port else None)
