# COBS (Consistent Overhead Byte Stuffing) for serial links: a frame on the wire is
# COBS(packet) followed by one 0x00, so a receiver resynchronises at the next zero after
# any corruption.  MicroPython subset; the *_into functions write into a caller's
# preallocated buffer and allocate nothing (the HIL UART gateway and the node use them).
#
#   encoded length <= n + n // 254 + 1 (+1 for the 0x00 delimiter): max_frame_len(n)
#
# decode_into returns -1 for a malformed frame (a zero inside it, a code that runs past
# its end, or no room in dst): never raises on bad bytes.

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):  # type: ignore[no-redef]
        return x


DELIM = const(0)


def max_encoded_len(n):
    return n + n // 254 + 1


def max_frame_len(n):
    return n + n // 254 + 2


def encode_into(src, dst, n=-1, off=0):
    """COBS-encode src[0:n] into dst[off:]; returns the encoded length (no delimiter)."""
    if n < 0:
        n = len(src)
    code_at = off  # where the current block's code byte goes
    o = off + 1
    code = 1
    i = 0
    while i < n:
        b = src[i]
        if b == 0:
            dst[code_at] = code
            code_at = o
            o += 1
            code = 1
        else:
            dst[o] = b
            o += 1
            code += 1
            if code == 0xFF:
                dst[code_at] = code
                code_at = o
                o += 1
                code = 1
        i += 1
    dst[code_at] = code
    return o - off


def frame_into(src, dst, n=-1):
    """COBS(src[0:n]) + 0x00 into dst; returns the frame length."""
    k = encode_into(src, dst, n, 0)
    dst[k] = 0
    return k + 1


def decode_into(src, dst, n=-1, start=0):
    """Decode one COBS frame src[start:start+n] (without its delimiter) into dst.

    Returns the decoded length, or -1 when the frame is malformed or dst is too small.
    """
    if n < 0:
        n = len(src) - start
    end = start + n
    i = start
    o = 0
    cap = len(dst)
    while i < end:
        code = src[i]
        if code == 0:
            return -1
        i += 1
        j = i + code - 1
        if j > end or o + code - 1 > cap:
            return -1
        while i < j:
            b = src[i]
            if b == 0:
                return -1
            dst[o] = b
            o += 1
            i += 1
        if code < 0xFF and i < end:
            if o >= cap:
                return -1
            dst[o] = 0
            o += 1
    return o


def encode(data):
    """COBS(data) as bytes (allocates; for hosts and tests)."""
    buf = bytearray(max_encoded_len(len(data)))
    return bytes(buf[: encode_into(data, buf)])


def decode(frame):
    """The packet inside one COBS frame (delimiter stripped); ValueError when malformed."""
    buf = bytearray(len(frame))
    k = decode_into(frame, buf)
    if k < 0:
        raise ValueError("malformed COBS frame")
    return bytes(buf[:k])


class Deframer:
    """Splits a serial byte stream into packets: feed() chunks, get each decoded packet
    through the callback as a memoryview of one preallocated buffer (valid during the
    call).  Counts frames, malformed frames and bytes dropped because a frame was longer
    than max_len, like the fprime deframer counts what it discards."""

    def __init__(self, max_len, callback):
        self.raw = bytearray(max_encoded_len(max_len))
        self.out = bytearray(max_len)
        self.out_mv = memoryview(self.out)
        self.fill = 0
        self.overflow = False
        self.callback = callback
        self.frames = 0
        self.malformed = 0
        self.dropped = 0  # bytes discarded (malformed or oversized frames)

    def feed(self, data, n=-1):
        if n < 0:
            n = len(data)
        raw = self.raw
        cap = len(raw)
        i = 0
        while i < n:
            b = data[i]
            i += 1
            if b != 0:
                if self.fill < cap:
                    raw[self.fill] = b
                    self.fill += 1
                else:
                    self.overflow = True
                    self.dropped += 1
                continue
            # delimiter: one frame ends here
            k = self.fill
            self.fill = 0
            if self.overflow:
                self.overflow = False
                self.malformed += 1
                self.dropped += k
                continue
            if k == 0:
                continue  # back-to-back delimiters: idle line
            m = decode_into(raw, self.out, k)
            if m < 0:
                self.malformed += 1
                self.dropped += k
                continue
            self.frames += 1
            self.callback(self.out_mv[:m])
