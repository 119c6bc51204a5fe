"""Type stub for the benchmark-only extension (``_bench_c.pyx``)."""

Buffer = bytes | bytearray | memoryview

SIMD_LEVELS: tuple[str, ...]

def crc_scan(data: Buffer, level: str = "best") -> tuple[int, int, int]:
    """Walk packets by their length field checking each CRC at `level`: (good, bad, end offset)."""
