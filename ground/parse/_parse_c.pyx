# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The packet parser's fast path, twin of ``_parse_py`` (same API, results, exceptions).

The scanning is C in the headers beside this file (``lb_parse.h``, ``lb_level.h``; see
docs/parser.md): one pass over the container without the GIL, with exactly the
reference scanner's rules, an accepted packet decoded at once while it is in L1, the
CRC by slicing-by-8 (tables derived at import from ``wire.ccsds.CRC_TABLE``), runs of
one layout taken four packets at a time by a run kernel.  That C is compiled once per
instruction-set level (baseline, SSSE3, AVX2, AVX-512 VBMI) under the level's target,
whatever flags the extension is built with, and the level is chosen at run time from
the CPU (``set_simd``); every level gives bit-identical results.

This module holds what needs Python: the decode plans compiled from
``compile_layout()`` (the dictionary stays the single source), the output arrays (the
scan returns here, GIL held, the first time an APID is accepted, to allocate that
APID's arrays, then resumes where it stopped), the results, and the stream parser.

Values are ``raw * scale + add`` in float64 exactly as the pure twin computes them:
integers become doubles exactly through the exponent bits of 2^52, and setup.py builds
with -ffp-contract=off so no fused multiply-add changes a bit.  The differential tests
hold every level to the pure twin bit for bit.
"""

from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE
from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int16_t, int32_t, int64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memset

cdef extern from "stdlib.h":
    void* aligned_alloc(size_t alignment, size_t size) nogil

cimport numpy as cnp
import numpy as np

from ground.parse._common import (
    BAD_CRC,
    BAD_LENGTH,
    BAD_TYPE,
    BAD_VERSION,
    MIN_PACKET,
    TRUNCATED,
    UNKNOWN_APID,
    ParseResult,
    Rejected,
    Table,
    compile_layout,
)
from wire import ccsds

cnp.import_array()


cdef extern from "lb_parse.h" nogil:
    void lb_crc_tables(const uint8_t* base)
    uint16_t lb_T[8][256]

    ctypedef struct lb_field:
        int32_t load
        uint32_t mask
        uint32_t sbit
        int32_t pad_
    ctypedef struct lb_pair:
        uint8_t shuf[16]
        uint64_t sbit[2]
        double bias[2]
        double scale[2]
        double add[2]
        int32_t chunk
        int32_t col
        int32_t two
    ctypedef struct lb_quad:
        uint8_t shuf[32]
        uint64_t sbit[4]
        double bias[4]
        double scale[4]
        double add[4]
        int32_t chunk[2]
        int32_t col
        int32_t ncols
    ctypedef struct lb_run:
        uint8_t idx[3][64]
        int64_t shl[3][8]
        double scale[3][8]
        double add[3][8]
        uint64_t hdr
        int32_t shape
        int32_t ncols
        int32_t total
        int32_t lastmask
    ctypedef struct lb_layout:
        int32_t len
        int32_t nnum
        int32_t first
        int32_t generic
        int32_t s_off
        int32_t s_n
        int32_t pair0
        int32_t npairs
        int32_t quad0
        int32_t nquads
        int32_t run
        int32_t split
    ctypedef struct lb_split:
        int32_t total
    void lb_split_init(lb_split* s, Py_ssize_t total)
    enum:
        LB_SPLIT_MIN
    ctypedef struct lb_plan:
        int16_t lidx[2048]
        int32_t nlay
        Py_ssize_t max_length
        lb_layout* lay
        lb_run* runs
        lb_field* f_c
        int32_t* f_off
        int32_t* f_type
        double* f_scale
        double* f_add
        lb_pair* pairs
        lb_quad* quads
        lb_split* splits
        Py_ssize_t run_packets
    ctypedef struct lb_rej:
        Py_ssize_t start
        Py_ssize_t end
        int reason
    ctypedef struct lb_scan:
        Py_ssize_t p
        Py_ssize_t bad_start
        int bad_reason
        int need
        int failed
        Py_ssize_t consumed
        Py_ssize_t count
        Py_ssize_t cap
        uint16_t* apid
        uint16_t* seq
        int64_t* ticks
        int64_t* offset
        int32_t* length
        Py_ssize_t* cnt
        Py_ssize_t* lcap
        Py_ssize_t** rows
        double** vals
        int16_t** samp
        lb_rej* rej
        Py_ssize_t rej_cap
        Py_ssize_t rej_count

    ctypedef void (*lb_scan_fn)(lb_plan*, const uint8_t*, Py_ssize_t, int, Py_ssize_t, lb_scan*)
    ctypedef uint16_t (*lb_crc_fn)(const uint8_t*, Py_ssize_t, uint16_t)
    lb_scan_fn lb_scans[4]
    ctypedef Py_ssize_t (*lb_census_fn)(const lb_plan*, const uint8_t*, Py_ssize_t, Py_ssize_t, Py_ssize_t*)
    lb_census_fn lb_censuses[4]
    lb_crc_fn lb_crcs[4]
    int lb_cpu_level()
    void lb_cpu_model(char* out)
    const char* LB_COMPILER
    const char* LB_BUILD_ISA
    const char* LB_BUILD_FLAGS
    enum:
        LB_T_U8, LB_T_I8, LB_T_U16, LB_T_I16, LB_T_U32, LB_T_I32, LB_T_F32


# ---------------------------------------------------------------------------------
# CRC-16/CCITT-FALSE tables, derived from the contract's (itself generated from the
# polynomial); shared by every level
# ---------------------------------------------------------------------------------
_crc_base = bytes(ccsds.CRC_TABLE)
if len(_crc_base) != 512:
    raise ImportError("wire.ccsds.CRC_TABLE must hold 256 big-endian u16 entries")
lb_crc_tables(<const uint8_t*><bytes>_crc_base)
CRC_POLY = lb_T[0][1]  # the CRC of byte 0x01 is the polynomial itself


# ---------------------------------------------------------------------------------
# Levels: what this CPU runs, which one is in use
# ---------------------------------------------------------------------------------
_LEVELS = ("scalar", "ssse3", "avx2", "avx512")
cdef int _cpu = lb_cpu_level()
HAVE_SSSE3 = _cpu >= 1
HAVE_AVX2 = _cpu >= 2
HAVE_AVX512 = _cpu >= 3
SIMD_LEVELS = _LEVELS[: _cpu + 1]
cdef int _simd = 0  # 0 scalar, 1 SSSE3 pairs, 2 AVX2 quads + run kernel, 3 + AVX-512 VBMI run kernel
cdef lb_scan_fn _scan_fn = lb_scans[0]
cdef lb_census_fn _census_fn = lb_censuses[0]


def set_simd(level):
    """Choose the level: "avx512" (the AVX-512 VBMI run kernel for runs of small packets,
    AVX2 decoding elsewhere, everything compiled for AVX-512), "avx2", "ssse3" or
    "scalar" (True: the best this CPU has, False: scalar).  Returns the previous level.
    All give bit-identical results; the tests run each one the CPU supports."""
    global _simd, _scan_fn, _census_fn
    prev = _LEVELS[_simd]
    if level is True:
        level = SIMD_LEVELS[len(SIMD_LEVELS) - 1]
    elif level is False or level is None:
        level = "scalar"
    if level not in SIMD_LEVELS:
        raise ValueError(f"decoder {level!r} is not available here: {SIMD_LEVELS}")
    _simd = _LEVELS.index(level)
    _scan_fn = lb_scans[_simd]
    _census_fn = lb_censuses[_simd]
    return prev


def simd():
    """The level in use: "avx512", "avx2", "ssse3" or "scalar"."""
    return _LEVELS[_simd]


def build_info():
    """How this extension was built and what it runs on: the compiler, the ISA the build
    flags alone enable (the levels are compiled with their own targets regardless), the
    CPU model and the best level it supports."""
    cdef char model[49]
    lb_cpu_model(model)
    return {
        "compiler": (<bytes>LB_COMPILER).decode("ascii", "replace"),
        "build_flags": (<bytes>LB_BUILD_FLAGS).decode("ascii", "replace"),
        "build_isa": (<bytes>LB_BUILD_ISA).decode("ascii"),
        "cpu_model": (<bytes>model).decode("ascii", "replace").strip(),
        "cpu_level": _LEVELS[_cpu],
    }


set_simd("scalar" if __import__("os").environ.get("LUNABASE_PARSER_NO_SIMD") else True)


def crc16(data, uint16_t crc=0xFFFF):
    """CRC-16/CCITT-FALSE of a whole buffer with the slicing-by-8 tables."""
    cdef Py_buffer view
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        with nogil:
            crc = lb_crcs[_simd](<const uint8_t*>view.buf, view.len, crc)
    finally:
        PyBuffer_Release(&view)
    return crc


_REASON_NAMES = (None, BAD_VERSION, BAD_LENGTH, TRUNCATED, BAD_CRC, UNKNOWN_APID, BAD_TYPE)
_TYPE_CODES = {"u8": LB_T_U8, "i8": LB_T_I8, "u16": LB_T_U16, "i16": LB_T_I16, "u32": LB_T_U32, "i32": LB_T_I32,
               "f32": LB_T_F32}
cdef enum:
    _CENSUS_BYTES = 32768  # bytes the census walks at most

_SIZES = {"u8": 1, "i8": 1, "u16": 2, "i16": 2, "u32": 4, "i32": 4, "f32": 4}


cdef class Parser:
    """Parses containers (one MQTT payload = packets back to back) against a dictionary.

    ``parse(data)`` never raises on bad bytes: it skips, resynchronises and reports
    every skipped range in ``ParseResult.rejected``.
    """

    cdef readonly dict layouts
    cdef readonly Py_ssize_t max_length
    cdef lb_plan P                   # the tables the C scanner reads (lb_parse.h)
    cdef Py_ssize_t min_len
    cdef list _lay_list              # ApidLayout per layout index
    cdef list _columns               # tuple of numeric column names per layout index

    implementation = "cython"

    def __cinit__(self):
        memset(&self.P, 0, sizeof(lb_plan))

    @property
    def run_packets(self):
        """Packets the run kernels decoded so far (a diagnostic; 0 at the SSSE3 and scalar levels)."""
        return self.P.run_packets

    def __init__(self, dictionary=None, max_length=None):
        from wire.dictionary import load

        self.layouts = compile_layout(dictionary)
        self.max_length = max_length or (dictionary or load()).max_length
        cdef int i, j, nf, nl, size, np_, nq_
        for i in range(2048):
            self.P.lidx[i] = -1
        lays = list(self.layouts.values())
        self.P.nlay = len(lays)
        self.P.max_length = self.max_length
        nl = max(1, self.P.nlay)
        nf = max(1, sum(len(l.numeric) for l in lays))
        self.P.lay = <lb_layout*>calloc(nl, sizeof(lb_layout))
        self.P.runs = <lb_run*>aligned_alloc(64, nl * sizeof(lb_run))
        self.P.f_c = <lb_field*>calloc(nf, sizeof(lb_field))
        self.P.f_off = <int32_t*>calloc(nf, sizeof(int32_t))
        self.P.f_type = <int32_t*>calloc(nf, sizeof(int32_t))
        self.P.f_scale = <double*>calloc(nf, sizeof(double))
        self.P.f_add = <double*>calloc(nf, sizeof(double))
        self.P.pairs = <lb_pair*>calloc(nf, sizeof(lb_pair))
        self.P.quads = <lb_quad*>aligned_alloc(32, ((nf * sizeof(lb_quad) + 31) // 32) * 32)
        self.P.splits = <lb_split*>calloc(nl, sizeof(lb_split))
        if (self.P.splits == NULL or self.P.lay == NULL or self.P.runs == NULL or self.P.f_c == NULL or self.P.f_off == NULL
                or self.P.f_type == NULL or self.P.f_scale == NULL or self.P.f_add == NULL
                or self.P.pairs == NULL or self.P.quads == NULL):
            raise MemoryError()
        self._lay_list = lays
        self._columns = []
        self.min_len = 1 << 30
        j = 0
        np_ = 0
        nq_ = 0
        for i, lay in enumerate(lays):
            if not 0 <= lay.apid < 2048:
                raise ValueError(f"APID {lay.apid} does not fit in 11 bits")
            if lay.length < MIN_PACKET:
                raise ValueError(f"{lay.name}: {lay.length} bytes is shorter than a header and CRC")
            self.P.lidx[lay.apid] = i
            self.P.lay[i].len = lay.length
            self.P.lay[i].nnum = len(lay.numeric)
            self.P.lay[i].first = j
            self.P.lay[i].generic = 0
            self.min_len = min(self.min_len, lay.length)
            for (name, off, typ, scale, add) in lay.numeric:
                size = _SIZES[typ]
                if off < ccsds.HEADER_LEN or off + size > lay.length - ccsds.CRC_LEN:
                    raise ValueError(f"{lay.name}.{name}: field outside the payload")
                self.P.f_off[j] = off
                self.P.f_c[j].load = off + size - 4
                self.P.f_c[j].mask = <uint32_t>((<uint64_t>1 << (8 * size)) - 1)
                self.P.f_c[j].sbit = <uint32_t>(<uint64_t>1 << (8 * size - 1)) if typ[0] == "i" else 0
                self.P.f_c[j].pad_ = 0
                self.P.f_type[j] = _TYPE_CODES[typ]
                self.P.f_scale[j] = scale
                self.P.f_add[j] = add
                if typ == "f32":
                    self.P.lay[i].generic = 1
                j += 1
            self.P.lay[i].split = lay.length >= LB_SPLIT_MIN
            if self.P.lay[i].split:
                lb_split_init(&self.P.splits[i], lay.length)
            self._plan_pairs(i, lay, np_)
            self._plan_quads(i, nq_)
            self._plan_run(i, lay)
            np_ += self.P.lay[i].npairs
            nq_ += self.P.lay[i].nquads
            if lay.samples is not None:
                self.P.lay[i].s_off = lay.samples[0]
                self.P.lay[i].s_n = lay.samples[1] * lay.samples[2]
                if lay.samples[0] + 2 * self.P.lay[i].s_n > lay.length - ccsds.CRC_LEN:
                    raise ValueError(f"{lay.name}: sample block outside the payload")
            else:
                self.P.lay[i].s_off = -1
                self.P.lay[i].s_n = 0
            self._columns.append(tuple(f[0] for f in lay.numeric))
        if self.min_len == 1 << 30:
            self.min_len = MIN_PACKET

    cdef void _plan_pairs(self, int li, lay, int first):
        # consecutive numeric columns two by two, each pair read from one 16-byte window
        # of the packet; layouts with f32 fields or shorter than 16 bytes stay scalar
        cdef int k = 0, n = len(lay.numeric), m, lane, b, size, start
        cdef lb_pair* pr
        self.P.lay[li].pair0 = first
        self.P.lay[li].npairs = 0
        if self.P.lay[li].generic or lay.length < 16 or n == 0:
            return
        m = 0
        while k < n:
            f0 = lay.numeric[k]
            start = min(f0[1], lay.length - 16)
            lanes = [f0]
            if k + 1 < n:
                f1 = lay.numeric[k + 1]
                if f1[1] + _SIZES[f1[2]] <= start + 16:
                    lanes.append(f1)
            pr = &self.P.pairs[first + m]
            memset(pr, 0, sizeof(lb_pair))
            pr.chunk = start
            pr.col = k
            pr.two = len(lanes) == 2
            for lane in range(2):
                for b in range(8):
                    pr.shuf[8 * lane + b] = 0x80
                pr.sbit[lane] = 0
                pr.bias[lane] = 4503599627370496.0
                pr.scale[lane] = 1.0
                pr.add[lane] = 0.0
            for lane, (_name, off, typ, scale, add) in enumerate(lanes):
                size = _SIZES[typ]
                for b in range(size):  # lane byte b (least significant first)
                    pr.shuf[8 * lane + b] = off + size - 1 - b - start
                pr.sbit[lane] = (<uint64_t>1 << (8 * size - 1)) if typ[0] == "i" else 0
                pr.bias[lane] = 4503599627370496.0 + <double>pr.sbit[lane]
                pr.scale[lane] = scale
                pr.add[lane] = add
            k += len(lanes)
            m += 1
        self.P.lay[li].npairs = m

    cdef void _plan_run(self, int li, lay):
        # the run kernel's plan: field k in lane k % 8 of vector k // 8; layouts it cannot
        # take (f32 fields, samples, longer than 64 bytes, > 24 columns) keep lay_run 0
        cdef lb_run* r = &self.P.runs[li]
        cdef int n = len(lay.numeric), j, v, lane, bb, size, nvec
        cdef uint16_t w0, lenf
        memset(r, 0, sizeof(lb_run))
        self.P.lay[li].run = 0
        w0 = 0x0800 | lay.apid  # version 0, TM, secondary header
        lenf = lay.length - 7
        r.hdr = ((<uint64_t>(w0 >> 8)) | (<uint64_t>(w0 & 0xFF) << 8)
                 | (<uint64_t>(lenf >> 8) << 32) | (<uint64_t>(lenf & 0xFF) << 40))
        r.total = lay.length
        r.ncols = n
        if (self.P.lay[li].generic or lay.samples is not None or n == 0 or n > 24
                or lay.length > 64 or lay.length > self.max_length):
            return
        for v in range(3):
            for lane in range(8):
                r.scale[v][lane] = 1.0
                r.add[v][lane] = 0.0
        for v in range(3):
            for bb in range(64):
                r.idx[v][bb] = 0x40  # bit 6: a byte of the zero vector
        full = [0, 0, 0]
        for j, (_name, off, typ, scale, add) in enumerate(lay.numeric):
            v = j // 8
            lane = j % 8
            size = _SIZES[typ]
            for bb in range(size):  # lane byte bb, least significant first
                r.idx[v][8 * lane + bb] = off + size - 1 - bb
            r.shl[v][lane] = 64 - 8 * size if typ[0] == "i" else 0
            r.scale[v][lane] = scale
            r.add[v][lane] = add
            if typ[0] == "i" or scale != 1.0 or add != 0.0:
                full[v] = 1
        nvec = (n + 7) // 8
        r.shape = 8 * nvec + full[0] + 2 * full[1] + 4 * full[2]
        r.lastmask = (1 << (n - 8 * (nvec - 1))) - 1
        self.P.lay[li].run = 1

    cdef void _plan_quads(self, int li, int first):
        # two consecutive pairs make a quad when their columns are contiguous
        cdef int k = 0, m = 0, n = self.P.lay[li].npairs, lane, b
        cdef lb_pair* a
        cdef lb_pair* c
        cdef lb_quad* q
        self.P.lay[li].quad0 = first
        while k < n:
            a = &self.P.pairs[self.P.lay[li].pair0 + k]
            q = &self.P.quads[first + m]
            memset(q, 0, sizeof(lb_quad))
            q.col = a.col
            q.chunk[0] = a.chunk
            q.chunk[1] = a.chunk
            for b in range(16):
                q.shuf[b] = a.shuf[b]
                q.shuf[16 + b] = 0x80
            for lane in range(2):
                q.sbit[lane] = a.sbit[lane]
                q.bias[lane] = a.bias[lane]
                q.scale[lane] = a.scale[lane]
                q.add[lane] = a.add[lane]
                q.sbit[2 + lane] = 0
                q.bias[2 + lane] = 4503599627370496.0
                q.scale[2 + lane] = 1.0
                q.add[2 + lane] = 0.0
            q.ncols = 2 if a.two else 1
            k += 1
            if a.two and k < n:
                c = &self.P.pairs[self.P.lay[li].pair0 + k]
                q.chunk[1] = c.chunk
                for b in range(16):
                    q.shuf[16 + b] = c.shuf[b]
                for lane in range(2):
                    q.sbit[2 + lane] = c.sbit[lane]
                    q.bias[2 + lane] = c.bias[lane]
                    q.scale[2 + lane] = c.scale[lane]
                    q.add[2 + lane] = c.add[lane]
                q.ncols = 4 if c.two else 3
                k += 1
            m += 1
        self.P.lay[li].nquads = m

    def __dealloc__(self):
        free(self.P.lay)
        free(self.P.runs)
        free(self.P.f_c)
        free(self.P.f_off)
        free(self.P.f_type)
        free(self.P.f_scale)
        free(self.P.f_add)
        free(self.P.pairs)
        free(self.P.quads)
        free(self.P.splits)

    def parse(self, data):
        """Parse one complete container; a packet cut off at the end is ``truncated``."""
        return self._parse(data, True, 0)

    def _parse(self, data, bint final, Py_ssize_t base):
        # memoryview(...).cast("B") first, as the pure twin does: the same TypeErrors for
        # non-buffers and non-contiguous views
        mv = memoryview(data).cast("B")
        cdef Py_buffer view
        PyObject_GetBuffer(mv, &view, PyBUF_SIMPLE)
        try:
            return self._run(<const uint8_t*>view.buf, view.len, final, base)
        finally:
            PyBuffer_Release(&view)

    cdef object _run(self, const uint8_t* buf, Py_ssize_t n, bint final, Py_ssize_t base):
        # Outputs are sized from a census (the packets found by walking the length fields
        # of the first 32 kB: exact for a clean container that short, extrapolated for a
        # longer one) and grown by doubling when the scan finds more: sizing every APID
        # for the worst case would allocate, fault in and trim megabytes per call on
        # mixed traffic.
        cdef lb_scan o
        cdef int nl = max(1, self.P.nlay), li
        cdef cnp.npy_intp dims[3]
        cdef Py_ssize_t worst = n // self.min_len + 1, q, cap, walked, total_est = 0
        cdef Py_ssize_t* est = <Py_ssize_t*>calloc(nl, sizeof(Py_ssize_t))
        memset(&o, 0, sizeof(lb_scan))
        o.bad_start = -1
        o.cnt = <Py_ssize_t*>calloc(nl, sizeof(Py_ssize_t))
        o.lcap = <Py_ssize_t*>calloc(nl, sizeof(Py_ssize_t))
        o.rows = <Py_ssize_t**>calloc(nl, sizeof(Py_ssize_t*))
        o.vals = <double**>calloc(nl, sizeof(double*))
        o.samp = <int16_t**>calloc(nl, sizeof(int16_t*))
        outs = {}  # layout index -> [rows, values, raw]
        order = []  # layout indexes in order of first acceptance
        try:
            if (est == NULL or o.cnt == NULL or o.lcap == NULL or o.rows == NULL or o.vals == NULL
                    or o.samp == NULL):
                raise MemoryError()
            with nogil:
                walked = _census_fn(&self.P, buf, n, _CENSUS_BYTES, est)
            if walked < n:
                for li in range(nl):  # extrapolated, with some room
                    if est[li]:
                        est[li] = <Py_ssize_t>(est[li] * (<double>n / walked) * 1.1) + 8
            for li in range(nl):
                total_est += est[li]
            cap = min(worst, max(total_est, 16))
            dims[0] = cap
            apid_a = cnp.PyArray_EMPTY(1, dims, cnp.NPY_UINT16, 0)
            seq_a = cnp.PyArray_EMPTY(1, dims, cnp.NPY_UINT16, 0)
            ticks_a = cnp.PyArray_EMPTY(1, dims, cnp.NPY_INT64, 0)
            off_a = cnp.PyArray_EMPTY(1, dims, cnp.NPY_INT64, 0)
            len_a = cnp.PyArray_EMPTY(1, dims, cnp.NPY_INT32, 0)
            while True:
                o.cap = len(apid_a)
                o.apid = <uint16_t*>cnp.PyArray_DATA(apid_a)
                o.seq = <uint16_t*>cnp.PyArray_DATA(seq_a)
                o.ticks = <int64_t*>cnp.PyArray_DATA(ticks_a)
                o.offset = <int64_t*>cnp.PyArray_DATA(off_a)
                o.length = <int32_t*>cnp.PyArray_DATA(len_a)
                o.need = -1
                with nogil:
                    _scan_fn(&self.P, buf, n, final, base, &o)
                if o.failed:
                    raise MemoryError()
                if o.need < 0:
                    break
                if o.count >= o.cap:
                    # more packets than the census found: double the per-packet columns
                    cap = min(worst, 2 * o.cap)
                    apid_a = _grow(apid_a, o.count, cap)
                    seq_a = _grow(seq_a, o.count, cap)
                    ticks_a = _grow(ticks_a, o.count, cap)
                    off_a = _grow(off_a, o.count, cap)
                    len_a = _grow(len_a, o.count, cap)
                li = o.need
                if o.cnt[li] < o.lcap[li]:
                    continue
                # this APID's outputs: first packet (the census's count) or full (double)
                lay = self._lay_list[li]
                q = o.cnt[li] + (n - o.p) // self.P.lay[li].len + 1  # its worst case
                if li in outs:
                    cap = min(q, 2 * o.lcap[li])
                    rows, values, raw = [None if a is None else _grow(a, o.cnt[li], cap) for a in outs[li]]
                else:
                    cap = min(q, max(est[li], 4))
                    dims[0] = cap
                    rows = cnp.PyArray_EMPTY(1, dims, cnp.NPY_INTP, 0)
                    dims[1] = self.P.lay[li].nnum
                    values = cnp.PyArray_EMPTY(2, dims, cnp.NPY_FLOAT64, 0)
                    raw = None
                    if lay.samples is not None:
                        dims[1] = lay.samples[1]
                        dims[2] = lay.samples[2]
                        raw = cnp.PyArray_EMPTY(3, dims, cnp.NPY_INT16, 0)
                    order.append(li)
                if raw is not None:
                    o.samp[li] = <int16_t*>cnp.PyArray_DATA(raw)
                o.lcap[li] = cap
                o.rows[li] = <Py_ssize_t*>cnp.PyArray_DATA(rows)
                o.vals[li] = <double*>cnp.PyArray_DATA(values)
                outs[li] = (rows, values, raw)
            count = o.count
            tables = {}
            for li in order:
                rows, values, raw = outs[li]
                m = o.cnt[li]
                lay = self._lay_list[li]
                rows = _trim(rows, m)
                values = _trim(values, m)
                if raw is not None:
                    raw = _trim(raw, m)
                tables[lay.apid] = Table(
                    apid=lay.apid,
                    name=lay.name,
                    columns=self._columns[li],
                    rows=rows,
                    values=values,
                    raw_samples=raw,
                    sample_scale=lay.samples[3] if lay.samples else 1.0,
                    texts=self._texts(buf, base, off_a, rows, lay.texts) if lay.texts else {},
                )
            rejected = [
                Rejected(o.rej[q].start + base, o.rej[q].end + base, _REASON_NAMES[o.rej[q].reason])
                for q in range(o.rej_count)
            ]
            return ParseResult(
                count,
                _trim(apid_a, count),
                _trim(seq_a, count),
                _trim(ticks_a, count),
                _trim(off_a, count),
                _trim(len_a, count),
                tables,
                rejected,
                o.consumed,
            )
        finally:
            free(est)
            free(o.cnt)
            free(o.lcap)
            free(o.rows)
            free(o.vals)
            free(o.samp)
            free(o.rej)
    cdef dict _texts(self, const uint8_t* b, Py_ssize_t base, off_a, rows, tuple spec):
        # bytes fields (EVENT text): one bytes object per packet, NUL padding stripped
        cdef dict out = {}
        cdef Py_ssize_t k, m, nrows = len(rows)
        cdef int t_off, size
        cdef const uint8_t* s
        cdef const int64_t* offs = <const int64_t*>cnp.PyArray_DATA(off_a)
        cdef const cnp.npy_intp* rp = <const cnp.npy_intp*>cnp.PyArray_DATA(rows)
        for (name, t_off, size) in spec:
            lst = []
            for k in range(nrows):
                s = b + (offs[rp[k]] - base) + t_off
                m = size
                while m > 0 and s[m - 1] == 0:
                    m -= 1
                lst.append(PyBytes_FromStringAndSize(<const char*>s, m))
            out[name] = lst
        return out


cdef object _grow(object a, Py_ssize_t m, Py_ssize_t cap):
    # a bigger array (cap rows) holding a's first m rows
    out = np.empty((cap,) + a.shape[1:], dtype=a.dtype)
    out[:m] = a[:m]
    return out


cdef object _trim(object a, Py_ssize_t m):
    # outputs were sized for the worst case; keep a view when little is wasted, else a
    # compact copy so a result does not pin a mostly empty allocation
    cdef Py_ssize_t cap = len(a)
    if m == cap:
        return a
    if m * 4 >= cap or (cap - m) * a.itemsize * (a.size // cap if cap else 1) < 65536:
        return a[:m]
    return a[:m].copy()



cdef class StreamParser:
    """Parses a byte stream (e.g. a serial link without COBS) chunk by chunk.

    ``feed`` returns what the new bytes completed; offsets are positions in the whole
    stream.  An incomplete packet at the end is kept (at most one max-length packet)
    until more bytes arrive or ``flush`` declares it truncated.
    """

    cdef readonly Parser parser
    cdef bytearray _buf
    cdef public Py_ssize_t position  # stream offset of the first pending byte

    def __init__(self, dictionary=None, parser=None):
        self.parser = parser if parser is not None else Parser(dictionary)
        self._buf = bytearray()
        self.position = 0

    @property
    def pending(self):
        """Bytes held back waiting for the rest of a packet."""
        return len(self._buf)

    def feed(self, data):
        if not self._buf:
            # nothing held back: scan the new bytes in place, keep only their tail
            mv = memoryview(data).cast("B")
            res = self.parser._parse(mv, False, self.position)
            if res.consumed < len(mv):
                self._buf += mv[res.consumed:]
            self.position += res.consumed
            return res
        self._buf += data
        return self._take(False)

    def flush(self):
        """Declare the stream ended: whatever is held back is rejected as truncated."""
        return self._take(True)

    cdef object _take(self, bint final):
        res = self.parser._parse(self._buf, final, self.position)
        # decoded values were copied out of the buffer, so it can be trimmed now
        del self._buf[: res.consumed]
        self.position += res.consumed
        return res
