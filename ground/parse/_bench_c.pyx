# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Benchmark-only C for ``lunabase bench parse``, kept out of the production parser: the
CRC-only pass the parser is compared against, built from the same headers
(``lb_parse.h``, ``lb_crcscan.h``) so it runs the parser's own CRC code at each
instruction-set level."""

from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE
from libc.stdint cimport uint8_t, int32_t
from libc.stdlib cimport calloc

from wire import ccsds

cdef extern from *:
    """
    #define LB_CRCSCAN 1
    """

cdef extern from "lb_parse.h" nogil:
    void lb_crc_tables(const uint8_t* base)
    ctypedef struct lb_split:
        int32_t total
    void lb_split_init(lb_split* s, Py_ssize_t total)
    enum:
        LB_SPLIT_MIN
    ctypedef void (*lb_crcscan_fn)(const uint8_t*, Py_ssize_t, lb_split**, Py_ssize_t, Py_ssize_t*, Py_ssize_t*,
                                   Py_ssize_t*)
    lb_crcscan_fn lb_crcscans[4]
    int lb_cpu_level()

_crc_base = bytes(ccsds.CRC_TABLE)
lb_crc_tables(<const uint8_t*><bytes>_crc_base)

_LEVELS = ("scalar", "ssse3", "avx2", "avx512")
SIMD_LEVELS = _LEVELS[: lb_cpu_level() + 1]

# the four-chain tables for every length the parser has them for (its layouts' lengths
# of LB_SPLIT_MIN bytes or more), by length: the parser and this pass use the same CRC
cdef enum:
    _NLEN = 65543  # every length a packet header can give
cdef lb_split** _by_len = <lb_split**>calloc(_NLEN, sizeof(lb_split*))


def _split_lengths():
    from wire.dictionary import load

    return sorted({p.length for p in load().packets if p.length >= LB_SPLIT_MIN})


for _len in _split_lengths():
    _by_len[_len] = <lb_split*>calloc(1, sizeof(lb_split))
    lb_split_init(_by_len[_len], _len)


def crc_scan(data, level="best"):
    """Walk packets by their length field and check each CRC (residue 0), nothing else,
    with the parser's CRC compiled for `level` ("best": the best this CPU runs).
    Returns (good, bad, end)."""
    cdef Py_buffer view
    cdef Py_ssize_t good = 0, bad = 0, end = 0
    cdef int lv
    if level == "best":
        level = SIMD_LEVELS[len(SIMD_LEVELS) - 1]
    if level not in SIMD_LEVELS:
        raise ValueError(f"level {level!r} is not available here: {SIMD_LEVELS}")
    lv = _LEVELS.index(level)
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        with nogil:
            lb_crcscans[lv](<const uint8_t*>view.buf, view.len, _by_len, _NLEN, &good, &bad, &end)
    finally:
        PyBuffer_Release(&view)
    return good, bad, end
