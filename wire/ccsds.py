# The lunabase wire contract: CCSDS Space Packets with a time-tag secondary header and a
# CRC-16/CCITT-FALSE trailer.  Written in the subset of Python that both MicroPython and
# CPython run: firmware encodes with it on the node, the ground and the simulator use it
# as the reference.  Byte layout and a worked example: docs/wire-format.md.
#
#  0      2      4      6             10     12                     n-2    n
#  +------+------+------+-------------+------+----------------------+------+
#  | id   | seq  | len  | coarse (s)  | fine |  payload             | CRC  |
#  +------+------+------+-------------+------+----------------------+------+
#   id  = version(3)=0 | type(1) | sec-hdr flag(1)=1 | APID(11)
#   seq = sequence flags(2)=0b11 | sequence count(14)
#   len = total length - 7          (CCSDS "packet data length")
#   coarse/fine = node time, seconds since 2000-01-01T00:00:00Z and 2^-16 s fractions
#   CRC = CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF) over bytes [0, n-2)
#
# A container is packets back to back (an MQTT message carries one container); on a
# serial line each packet is COBS-framed (wire/cobs.py).
#
# Telecommands (type 1) carry, after the time tag: opcode u8, flags u8, counter u32,
# not_before u32, not_after u32 (wire-epoch seconds, 0 = unbounded), the addressed node's
# id (u8 length + ASCII), the opcode's arguments, then a MAC: the first MAC_LEN bytes of
# HMAC-SHA256(node key, every byte before the MAC).  The counter strictly increases per
# node (anti-replay); id and window are inside the MAC, so neither can be changed.
import struct

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):  # type: ignore[no-redef]
        return x


VERSION = const(0)
TYPE_TM = const(0)
TYPE_TC = const(1)
SEQ_UNSEGMENTED = const(3)
SEQ_MASK = const(0x3FFF)
SEQ_MOD = const(0x4000)  # sequence counts wrap here: 14 bits
APID_MASK = const(0x07FF)

PRIMARY_LEN = const(6)
SECONDARY_LEN = const(6)
HEADER_LEN = const(12)  # primary + secondary
CRC_LEN = const(2)
OVERHEAD = const(14)  # header + CRC: a packet is OVERHEAD + payload bytes
FINE_PER_S = const(65536)
EPOCH_UNIX = const(946684800)  # Unix time of 2000-01-01T00:00:00Z, the time tags' epoch

TC_HEAD_LEN = const(15)  # opcode u8, flags u8, counter u32, not_before u32, not_after u32, id length u8
MAC_LEN = const(16)
TC_OVERHEAD = const(45)  # OVERHEAD + TC_HEAD_LEN + MAC_LEN; a TC is this + node id + arguments
NODE_ID_MAX = const(32)

# Custody acknowledgement (docs/custody.md, wire/custody.py): a TC-format packet (same
# MAC, node id and envelope as a telecommand) on the node's cmd topic with APID
# CUSTODY_APID and opcode 0.  Its counter is a counter space of its own (strictly
# increasing, persisted in the journal state); its arguments are 8 big-endian u16, one
# per APID 0..7: 0 = no statement, else CUSTODY_VALID | s = "every packet of this APID
# up to sequence count s (mod 2^14, within half the modulus) is committed to the archive".
CUSTODY_APID = const(0x041)
CUSTODY_VALID = const(0x8000)
HEADER_FMT = ">HHHIH"  # id, seq, length, coarse, fine
TC_HEAD_FMT = ">BBIIIB"


def _make_table():
    t = bytearray(512)
    for i in range(256):
        c = i << 8
        for _ in range(8):
            c = ((c << 1) ^ 0x1021) if c & 0x8000 else (c << 1)
        c &= 0xFFFF
        t[2 * i] = c >> 8
        t[2 * i + 1] = c & 0xFF
    return bytes(t)


CRC_TABLE = _make_table()  # big-endian u16 per byte value; shared with the parsers


try:  # CPython: the same CRC (poly 0x1021, MSB first, no reflection, no final xor) in C
    from binascii import crc_hqx as _crc_hqx
except ImportError:  # MicroPython has no crc_hqx: the table loop below
    _crc_hqx = None


def crc16(buf, start=0, end=-1, crc=0xFFFF):
    """CRC-16/CCITT-FALSE of buf[start:end] (end=-1: to the end); allocation-free on MicroPython."""
    if end < 0:
        end = len(buf)
    if _crc_hqx is not None:
        # ~100x faster on CPython, where the simulator's delivery oracle checks every packet
        return _crc_hqx(memoryview(buf)[start:end], crc)
    t = CRC_TABLE
    i = start
    while i < end:
        j = ((crc >> 8) ^ buf[i]) << 1
        crc = (((crc << 8) & 0xFF00) ^ (t[j] << 8) ^ t[j + 1]) & 0xFFFF
        i += 1
    return crc


def pack_header(buf, off, ptype, apid, seq, total_len, coarse, fine):
    """Write the 12-byte primary+secondary header of a packet of total_len bytes."""
    struct.pack_into(
        HEADER_FMT,
        buf,
        off,
        (ptype << 12) | 0x0800 | (apid & APID_MASK),
        (SEQ_UNSEGMENTED << 14) | (seq & SEQ_MASK),
        total_len - 7,
        coarse,
        fine,
    )


def seal(buf, off, total_len):
    """Write the CRC trailer over buf[off:off+total_len-2]; returns the CRC."""
    end = off + total_len - CRC_LEN
    c = crc16(buf, off, end)
    buf[end] = c >> 8
    buf[end + 1] = c & 0xFF
    return c


def check(buf, off, total_len):
    """True when buf[off:off+total_len] ends with a correct CRC."""
    end = off + total_len - CRC_LEN
    return crc16(buf, off, end) == (buf[end] << 8) | buf[end + 1]


def peek(buf, off=0):
    """(ptype, apid, seq, total_len, coarse, fine) of the packet header at off."""
    w0, w1, ln, coarse, fine = struct.unpack_from(HEADER_FMT, buf, off)
    return (w0 >> 12) & 1, w0 & APID_MASK, w1 & SEQ_MASK, ln + 7, coarse, fine


class PacketBuffer:
    """One preallocated packet of a fixed APID and length, reused for every send.

    The owner packs the payload at PAYLOAD (offset 12) with struct.pack_into, then calls
    finish(coarse, fine): header, per-APID sequence count and CRC are written in place
    and the same memoryview is returned, so steady-state encoding allocates nothing.
    """

    PAYLOAD = HEADER_LEN

    def __init__(self, apid, total_len, ptype=TYPE_TM):
        self.apid = apid
        self.ptype = ptype
        self.total_len = total_len
        self.buf = bytearray(total_len)
        self.mv = memoryview(self.buf)
        self.seq = 0

    def finish(self, coarse, fine):
        seq = self.seq
        pack_header(self.buf, 0, self.ptype, self.apid, seq, self.total_len, coarse, fine)
        seal(self.buf, 0, self.total_len)
        self.seq = (seq + 1) & SEQ_MASK
        return self.mv


# ---------------------------------------------------------------------------------
# Telecommands: HMAC-SHA256 (RFC 2104) over hashlib, which both runtimes have.
# ---------------------------------------------------------------------------------


def hmac_sha256(key, msg):
    import hashlib

    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    k = bytearray(64)
    k[: len(key)] = key
    ipad = bytearray(64)
    opad = bytearray(64)
    for i in range(64):
        ipad[i] = k[i] ^ 0x36
        opad[i] = k[i] ^ 0x5C
    inner = hashlib.sha256(ipad)
    inner.update(msg)
    outer = hashlib.sha256(opad)
    outer.update(inner.digest())
    return outer.digest()


def build_tc(key, node, apid, seq, opcode, counter, args, coarse=0, fine=0, flags=0, not_before=0, not_after=0):
    """A signed telecommand for node (bytes id) as bytes (ground side; allocates freely).

    not_before/not_after: the validity window in wire-epoch seconds, 0 = unbounded.
    """
    ln = len(node)
    if not 1 <= ln <= NODE_ID_MAX:
        raise ValueError("node id must be 1-32 bytes")
    total = TC_OVERHEAD + ln + len(args)
    buf = bytearray(total)
    pack_header(buf, 0, TYPE_TC, apid, seq, total, coarse, fine)
    struct.pack_into(TC_HEAD_FMT, buf, HEADER_LEN, opcode, flags, counter, not_before, not_after, ln)
    a = HEADER_LEN + TC_HEAD_LEN
    buf[a : a + ln] = node
    a += ln
    buf[a : a + len(args)] = args
    m = a + len(args)
    buf[m : m + MAC_LEN] = hmac_sha256(key, memoryview(buf)[:m])[:MAC_LEN]
    seal(buf, 0, total)
    return bytes(buf)


def _eq(a, b):
    # constant-time comparison: a forged MAC must not leak how many bytes matched
    d = len(a) ^ len(b)
    for i in range(min(len(a), len(b))):
        d |= a[i] ^ b[i]
    return d == 0


# Results of open_tc, one per failure the node reports back in its ACK reason.
TC_OK = const(0)
TC_BAD_MAC = const(1)
TC_REPLAY = const(2)
TC_BAD_LENGTH = const(5)
TC_EXPIRED = const(7)
TC_BAD_CRC = const(8)
TC_NOT_TC = const(9)
TC_WRONG_NODE = const(10)
TC_NOT_YET_VALID = const(11)


def open_tc(key, node, buf, last_counter, now):
    """Check a received telecommand addressed to node (bytes id) at node time now (wire s).

    Returns (status, opcode, counter, args_start, args_end, seq).  Checked in this order:
    length, type, CRC, node id (TC_WRONG_NODE), MAC, counter > last_counter (TC_REPLAY),
    then the window: now < not_before -> TC_NOT_YET_VALID, now > not_after -> TC_EXPIRED
    (0 = unbounded).  Only the last two (and TC_OK) mean the TC is authentic and fresh,
    so only they may consume its counter.  Allocates only inside the HMAC.
    """
    n = len(buf)
    if n < TC_OVERHEAD + 1:
        return TC_BAD_LENGTH, 0, 0, 0, 0, 0
    ptype, _apid, seq, total, _c, _f = peek(buf, 0)
    if ptype != TYPE_TC:
        return TC_NOT_TC, 0, 0, 0, 0, seq
    if total != n:
        return TC_BAD_LENGTH, 0, 0, 0, 0, seq
    if not check(buf, 0, n):
        return TC_BAD_CRC, 0, 0, 0, 0, seq
    opcode, _flags, counter, nb, na, ln = struct.unpack_from(TC_HEAD_FMT, buf, HEADER_LEN)
    a = HEADER_LEN + TC_HEAD_LEN
    m = n - CRC_LEN - MAC_LEN
    if ln == 0 or a + ln > m:
        return TC_BAD_LENGTH, opcode, counter, 0, 0, seq
    # the id is not secret: compare it before spending an HMAC, so a misrouted TC says so
    d = ln ^ len(node)
    if d == 0:
        for i in range(ln):
            d |= buf[a + i] ^ node[i]
    if d:
        return TC_WRONG_NODE, opcode, counter, 0, 0, seq
    mac = hmac_sha256(key, memoryview(buf)[:m])
    if not _eq(mac[:MAC_LEN], memoryview(buf)[m : m + MAC_LEN]):
        return TC_BAD_MAC, opcode, counter, 0, 0, seq
    if counter <= last_counter:
        return TC_REPLAY, opcode, counter, 0, 0, seq
    if nb and now < nb:
        return TC_NOT_YET_VALID, opcode, counter, a + ln, m, seq
    if na and now > na:
        return TC_EXPIRED, opcode, counter, a + ln, m, seq
    return TC_OK, opcode, counter, a + ln, m, seq
