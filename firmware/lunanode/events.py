# EVENT packets (wire/dictionary.toml "EVENT"): one preallocated PacketBuffer; text is a
# short ASCII detail.  Events are rare, so the text may allocate; the packet does not.
import struct
from wire import ccsds, defs


class Events:
    def __init__(self, clock, journal):
        self.clock = clock
        self.journal = journal
        self.pb = ccsds.PacketBuffer(defs.APID_EVENT, defs.EVENT_LEN)
        self.count = 0

    def emit(self, code, severity=defs.SEVERITY_INFO, arg0=0, arg1=0, text=None):
        # text: str or bytes (truncated to 24); None = empty
        if text is None:
            text = b""
        elif isinstance(text, str):
            text = text.encode()
        struct.pack_into(defs.EVENT_FMT, self.pb.buf, ccsds.HEADER_LEN, code, severity, 0, arg0, arg1, text[:24])
        self.clock.stamp()
        self.journal.append(self.pb.finish(self.clock.coarse, self.clock.fine), defs.EVENT_LEN)
        self.count += 1
