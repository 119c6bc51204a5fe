"""Type stub for the compiled twin (``_parse_c.pyx``); same API as ``_parse_py``."""

from ground.parse._common import ApidLayout, ParseResult
from wire.dictionary import Dictionary

Buffer = bytes | bytearray | memoryview

CRC_POLY: int

def crc16(data: Buffer, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE of a whole buffer (slicing-by-8 tables)."""

class Parser:
    implementation: str
    @property
    def layouts(self) -> dict[int, ApidLayout]: ...
    @property
    def max_length(self) -> int: ...
    @property
    def run_packets(self) -> int:
        """Packets the run kernels decoded so far (a diagnostic; 0 at the SSSE3 and scalar levels)."""
    def __init__(self, dictionary: Dictionary | None = None, max_length: int | None = None) -> None: ...
    def parse(self, data: Buffer) -> ParseResult: ...
    def _parse(self, data: Buffer, final: bool, base: int) -> ParseResult: ...

class StreamParser:
    position: int
    @property
    def parser(self) -> Parser: ...
    @property
    def pending(self) -> int: ...
    def __init__(self, dictionary: Dictionary | None = None, parser: Parser | None = None) -> None: ...
    def feed(self, data: Buffer) -> ParseResult: ...
    def flush(self) -> ParseResult: ...

HAVE_SSSE3: bool
HAVE_AVX2: bool
HAVE_AVX512: bool
SIMD_LEVELS: tuple[str, ...]

def set_simd(level: str | bool | None) -> str:
    """Choose the decoder ("avx512", "avx2", "ssse3", "scalar"; True = best); returns the previous."""

def simd() -> str:
    """The level in use: "avx512", "avx2", "ssse3" or "scalar"."""

def build_info() -> dict[str, str]:
    """compiler, build_flags, build_isa (what the flags alone enable), cpu_model, cpu_level."""
