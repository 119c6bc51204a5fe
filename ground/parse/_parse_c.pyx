# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The packet parser's fast path, twin of ``_parse_py`` (same API, results, exceptions).

One pass over the container in C without the GIL, with exactly the reference scanner's
rules (version, length bounds, the strict-plausibility wait rule, CRC, CRC-proven packets
skipped whole, byte-by-byte resync with one range per run of garbage):

* CRC-16/CCITT-FALSE by slicing-by-8, tables derived at import from
  ``wire.ccsds.CRC_TABLE``; the residue over a whole packet, trailer included, is 0
  exactly when the trailer is right.  When the next packets have the same first word and
  length, four (else two) CRCs are computed together (independent dependency chains) and
  kept until the scan reaches them.
* An accepted packet is decoded at once, while it is in L1: header columns into arrays
  sized for the worst case (n // shortest packet), fields into its APID's (rows, columns)
  float64 table, samples byte-swapped straight into the int16 (n, count, axes) array.
  The scan returns to the caller (GIL held) the first time an APID is accepted, to
  allocate that APID's arrays, then resumes where it stopped.  Oversized outputs are
  trimmed (a view, or a copy when most of the allocation would be wasted).
* Fields are decoded through per-APID plans compiled from ``compile_layout()`` (the
  dictionary stays the single source): an AVX2 (4 fields) or SSSE3 (2 fields) shuffle
  plan chosen at run time, else a branch-free scalar loop; f32 fields use a typed loop.
* On CPUs with AVX-512 VBMI, a run of packets of one small integer layout (<= 64 bytes,
  <= 24 fields: HK, POWER, THERMAL, RADIATION, EVENT, ACK) goes through the run kernel:
  four packets per step, headers compared at once, four CRCs together, each packet
  decoded from one 64-byte load with the plan held in registers.  It stops at the first
  group that is not a clean run and the scanner above takes over, so every rule (and
  every rejection) stays in one place.  With AVX2 only (and for the layouts the AVX-512
  kernel leaves), the same loop runs around the AVX2 quad decoder.

Values are ``raw * scale + add`` in float64 exactly as the pure twin computes them:
integers become doubles exactly through the exponent bits of 2^52, and setup.py builds
with -ffp-contract=off so no fused multiply-add changes a bit.  The differential tests
hold every decoder to the pure twin bit for bit.
"""

from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE
from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int16_t, int32_t, int64_t
from libc.stdlib cimport malloc, calloc, realloc, free

cdef extern from "stdlib.h":
    void* aligned_alloc(size_t alignment, size_t size) nogil
from libc.string cimport memcpy, memset

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

# ---------------------------------------------------------------------------------
# CRC-16/CCITT-FALSE, slicing-by-8, tables derived at import from wire.ccsds.CRC_TABLE
# (itself generated from the polynomial): _T[0] is the byte-wise table, _T[k][b] is the
# register contribution of byte b followed by k zero bytes.
# ---------------------------------------------------------------------------------

cdef extern from *:
    """
    /* The tables live in C so the run kernel below (plain C with intrinsics) shares them. */
    #include <string.h>
    static uint16_t lb_T[8][256];

    #define LB_CRC_STEP(a, w) (a) = (uint16_t)(lb_T[7][(uint8_t)(w) ^ ((a) >> 8)] \
        ^ lb_T[6][(uint8_t)((w) >> 8) ^ ((a) & 0xFF)] ^ lb_T[5][(uint8_t)((w) >> 16)] \
        ^ lb_T[4][(uint8_t)((w) >> 24)] ^ lb_T[3][(uint8_t)((w) >> 32)] \
        ^ lb_T[2][(uint8_t)((w) >> 40)] ^ lb_T[1][(uint8_t)((w) >> 48)] ^ lb_T[0][(uint8_t)((w) >> 56)])
    #define LB_CRC_BYTE(a, c) (a) = (uint16_t)(((a) << 8) ^ lb_T[0][((a) >> 8) ^ (c)])

    /* little-endian host: byte j of an 8-byte chunk is bits 8j..8j+7 */
    static inline uint16_t lb_crc16(const uint8_t* p, Py_ssize_t n, uint16_t crc) {
        uint64_t w;
        while (n >= 8) { memcpy(&w, p, 8); LB_CRC_STEP(crc, w); p += 8; n -= 8; }
        while (n > 0) { LB_CRC_BYTE(crc, p[0]); p++; n--; }
        return crc;
    }

    /* two packets of the same length at once: two independent dependency chains, so
       the table lookups of one fill the other's latency */
    static inline void lb_crc16x2(const uint8_t* p, const uint8_t* q, Py_ssize_t n,
                                  uint16_t* cp, uint16_t* cq) {
        uint64_t w, v;
        uint16_t a = 0xFFFF, c = 0xFFFF;
        while (n >= 8) {
            memcpy(&w, p, 8); memcpy(&v, q, 8);
            LB_CRC_STEP(a, w); LB_CRC_STEP(c, v);
            p += 8; q += 8; n -= 8;
        }
        while (n > 0) { LB_CRC_BYTE(a, p[0]); LB_CRC_BYTE(c, q[0]); p++; q++; n--; }
        *cp = a; *cq = c;
    }

    /* four packets of length n back to back (p, p+n, p+2n, p+3n): the fastest of the
       three on the machines measured (bench parse), used by crc_scan and the run kernel */
    /* out of line: the callers (crc_scan, the run kernel) keep many values live, and
       inlined into them the four chains no longer fit in the registers */
    static __attribute__((noinline)) void lb_crc16x4(const uint8_t* p, Py_ssize_t n, uint16_t* out) {
        const Py_ssize_t s = n;
        uint64_t w0, w1, w2, w3;
        uint16_t a = 0xFFFF, c = 0xFFFF, d = 0xFFFF, e = 0xFFFF;
        while (n >= 8) {
            memcpy(&w0, p, 8); memcpy(&w1, p + s, 8); memcpy(&w2, p + 2 * s, 8); memcpy(&w3, p + 3 * s, 8);
            LB_CRC_STEP(a, w0); LB_CRC_STEP(c, w1); LB_CRC_STEP(d, w2); LB_CRC_STEP(e, w3);
            p += 8; n -= 8;
        }
        while (n > 0) {
            LB_CRC_BYTE(a, p[0]); LB_CRC_BYTE(c, p[s]); LB_CRC_BYTE(d, p[2 * s]); LB_CRC_BYTE(e, p[3 * s]);
            p++; n--;
        }
        out[0] = a; out[1] = c; out[2] = d; out[3] = e;
    }
    """
    uint16_t lb_T[8][256]
    uint16_t lb_crc16(const uint8_t* p, Py_ssize_t n, uint16_t crc) nogil
    void lb_crc16x2(const uint8_t* p, const uint8_t* q, Py_ssize_t n, uint16_t* cp, uint16_t* cq) nogil
    void lb_crc16x4(const uint8_t* p, Py_ssize_t n, uint16_t* out) nogil


cdef void _make_tables(bytes base):
    cdef int i, k
    cdef uint16_t c
    for i in range(256):
        lb_T[0][i] = (<uint8_t>base[2 * i] << 8) | <uint8_t>base[2 * i + 1]
    for k in range(1, 8):
        for i in range(256):
            c = lb_T[k - 1][i]
            lb_T[k][i] = <uint16_t>((c << 8) ^ lb_T[0][c >> 8])


_make_tables(bytes(ccsds.CRC_TABLE))
CRC_POLY = lb_T[0][1]  # the CRC of byte 0x01 is the polynomial itself


cdef inline uint16_t _crc16(const uint8_t* p, Py_ssize_t n, uint16_t crc) noexcept nogil:
    return lb_crc16(p, n, crc)


cdef inline void _crc16x2(const uint8_t* p, const uint8_t* q, Py_ssize_t n, uint16_t* cp, uint16_t* cq) noexcept nogil:
    lb_crc16x2(p, q, n, cp, cq)


cdef extern from *:
    """
    #if defined(__GNUC__) || defined(__clang__)
    #define LB_BSWAP16(x) __builtin_bswap16(x)
    #define LB_BSWAP32(x) __builtin_bswap32(x)
    #define LB_BSWAP64(x) __builtin_bswap64(x)
    #else
    #define LB_BSWAP16(x) ((uint16_t)(((x) >> 8) | ((x) << 8)))
    #define LB_BSWAP32(x) ((((x) & 0xFFu) << 24) | (((x) & 0xFF00u) << 8) | (((x) >> 8) & 0xFF00u) | ((x) >> 24))
    #define LB_BSWAP64(x) (((uint64_t)LB_BSWAP32((uint32_t)(x)) << 32) | LB_BSWAP32((uint32_t)((x) >> 32)))
    #endif
    #if PY_BIG_ENDIAN
    #error "lunabase's _parse_c assumes a little-endian host"
    #endif
    """
    uint16_t LB_BSWAP16(uint16_t) nogil
    uint32_t LB_BSWAP32(uint32_t) nogil
    uint64_t LB_BSWAP64(uint64_t) nogil


cdef extern from *:
    """
    /* Two numeric fields per step with SSSE3: one 16-byte load of the packet, pshufb puts
       each big-endian field zero-extended into a little-endian 64-bit lane, the sign bit
       is flipped and the exponent bits of 2^52 ORed in, then (lane - (2^52 + sign bit))
       is the exact integer as a double; * scale + add as packed float64 (bit-identical to
       the scalar arithmetic).  Chosen at run time; other hosts use the scalar loop. */
    typedef struct {
        uint8_t shuf[16];
        uint64_t sbit[2];
        double bias[2];
        double scale[2];
        double add[2];
        int32_t chunk;   /* packet offset of the 16-byte load */
        int32_t col;     /* first output column */
        int32_t two;     /* 1: both lanes are columns; 0: only the first */
        int32_t pad_;
    } lb_pair;

    #if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    #include <immintrin.h>
    #define LB_HAVE_SSSE3_CODE 1
    __attribute__((target("ssse3")))
    static void lb_decode_pairs_ssse3(const uint8_t* pk, double* out, const lb_pair* pr, int n) {
        const __m128i expo = _mm_set1_epi64x(0x4330000000000000LL);
        for (int i = 0; i < n; i++) {
            __m128i c = _mm_loadu_si128((const __m128i*)(pk + pr[i].chunk));
            __m128i x = _mm_shuffle_epi8(c, _mm_loadu_si128((const __m128i*)pr[i].shuf));
            x = _mm_or_si128(_mm_xor_si128(x, _mm_loadu_si128((const __m128i*)pr[i].sbit)), expo);
            __m128d d = _mm_sub_pd(_mm_castsi128_pd(x), _mm_loadu_pd(pr[i].bias));
            d = _mm_add_pd(_mm_mul_pd(d, _mm_loadu_pd(pr[i].scale)), _mm_loadu_pd(pr[i].add));
            if (pr[i].two) _mm_storeu_pd(out + pr[i].col, d);
            else _mm_store_sd(out + pr[i].col, d);
        }
    }
    static int lb_have_ssse3(void) { return __builtin_cpu_supports("ssse3") ? 1 : 0; }

    /* AVX2: four fields per step, two 16-byte windows (one per 128-bit lane). */
    typedef struct __attribute__((aligned(32))) {
        uint8_t shuf[32];
        uint64_t sbit[4];
        double bias[4];
        double scale[4];
        double add[4];
        int32_t chunk[2];
        int32_t col;
        int32_t ncols;   /* 1..4 */
        int32_t pad_[4];
    } lb_quad;

    static inline __attribute__((always_inline, target("avx2"))) void
    lb_quads_body(const uint8_t* pk, double* out, const lb_quad* q, int n) {
        const __m256i expo = _mm256_set1_epi64x(0x4330000000000000LL);
        for (int i = 0; i < n; i++) {
            __m256i c = _mm256_inserti128_si256(
                _mm256_castsi128_si256(_mm_loadu_si128((const __m128i*)(pk + q[i].chunk[0]))),
                _mm_loadu_si128((const __m128i*)(pk + q[i].chunk[1])), 1);
            __m256i x = _mm256_shuffle_epi8(c, _mm256_load_si256((const __m256i*)q[i].shuf));
            x = _mm256_or_si256(_mm256_xor_si256(x, _mm256_load_si256((const __m256i*)q[i].sbit)), expo);
            __m256d d = _mm256_sub_pd(_mm256_castsi256_pd(x), _mm256_load_pd(q[i].bias));
            d = _mm256_add_pd(_mm256_mul_pd(d, _mm256_load_pd(q[i].scale)), _mm256_load_pd(q[i].add));
            if (q[i].ncols == 4) {
                _mm256_storeu_pd(out + q[i].col, d);
            } else {
                /* plain 128/64-bit stores: vmaskmovpd stores are slow on AMD cores */
                __m128d lo = _mm256_castpd256_pd128(d);
                if (q[i].ncols == 1) {
                    _mm_store_sd(out + q[i].col, lo);
                } else {
                    _mm_storeu_pd(out + q[i].col, lo);
                    if (q[i].ncols == 3) _mm_store_sd(out + q[i].col + 2, _mm256_extractf128_pd(d, 1));
                }
            }
        }
    }
    __attribute__((target("avx2")))
    static void lb_decode_quads_avx2(const uint8_t* pk, double* out, const lb_quad* q, int n) {
        lb_quads_body(pk, out, q, n);
    }
    static int lb_have_avx2(void) { return __builtin_cpu_supports("avx2") ? 1 : 0; }

    /* The AVX2 run kernel: the AVX-512 one's loop (a run of one integer layout, four
       packets per step, headers compared at once, four CRCs together, constant columns
       stored once per group) around the quad decoder above, inlined.  For CPUs without
       AVX-512 VBMI, and layouts the AVX-512 kernel cannot take (longer than 64 bytes,
       more than 24 fields).  hdr as in lb_run (first word and length field).  The loop
       is a copy, not shared: an inlined common body would carry the AVX-512 target,
       which a CPU with AVX2 only cannot run. */
    __attribute__((target("avx2"))) static Py_ssize_t
    lb_run_avx2(const lb_quad* qd, int nq, uint64_t hdr, Py_ssize_t t, int nc, const uint8_t* b,
                Py_ssize_t p, Py_ssize_t n, int64_t offbase, Py_ssize_t i0, uint16_t* apid_o,
                uint16_t* seq_o, int64_t* ticks_o, int64_t* off_o, int32_t* len_o, Py_ssize_t* rows_o,
                double* vals) {
        const uint64_t hmask = 0x0000FFFF0000FFFFULL;
        const uint16_t apid = (uint16_t)(((hdr & 0xFF) << 8 | ((hdr >> 8) & 0xFF)) & 0x7FF);
        const __m128i apid4 = _mm_set1_epi16((short)apid), len4 = _mm_set1_epi32((int)t);
        const __m256i step4 = _mm256_setr_epi64x(0, 1, 2, 3), offs4 = _mm256_setr_epi64x(0, t, 2 * t, 3 * t);
        Py_ssize_t m = 0;
        while (n - p >= 4 * t) {
            const uint8_t* q = b + p;
            uint64_t h0, h1, h2, h3;
            uint16_t crc[4];
            memcpy(&h0, q, 8); memcpy(&h1, q + t, 8); memcpy(&h2, q + 2 * t, 8); memcpy(&h3, q + 3 * t, 8);
            if (((h0 & hmask) ^ hdr) | ((h1 & hmask) ^ hdr) | ((h2 & hmask) ^ hdr) | ((h3 & hmask) ^ hdr))
                break;
            lb_crc16x4(q, t, crc);
            if (crc[0] | crc[1] | crc[2] | crc[3])
                break;
            for (int h = 0; h < 4; h++) {
                const uint8_t* pk = q + h * t;
                lb_quads_body(pk, vals + m * nc, qd, nq);
                uint16_t sq; uint64_t tk;
                memcpy(&sq, pk + 2, 2); memcpy(&tk, pk + 4, 8);
                seq_o[m] = (uint16_t)(LB_BSWAP16(sq) & 0x3FFF);
                ticks_o[m] = (int64_t)(LB_BSWAP64(tk) & 0xFFFFFFFFFFFFULL);
                m++;
            }
            _mm_storel_epi64((__m128i*)(apid_o + m - 4), apid4);
            _mm_storeu_si128((__m128i*)(len_o + m - 4), len4);
            _mm256_storeu_si256((__m256i*)(rows_o + m - 4),
                                _mm256_add_epi64(_mm256_set1_epi64x((int64_t)(i0 + m - 4)), step4));
            _mm256_storeu_si256((__m256i*)(off_o + m - 4),
                                _mm256_add_epi64(_mm256_set1_epi64x(offbase + p), offs4));
            p += 4 * t;
        }
        return m;
    }
    #else
    typedef struct {
        uint8_t shuf[32]; uint64_t sbit[4]; double bias[4]; double scale[4]; double add[4];
        int32_t chunk[2]; int32_t col; int32_t ncols;
    } lb_quad;
    static void lb_decode_quads_avx2(const uint8_t* pk, double* out, const lb_quad* q, int n) {
        (void)pk; (void)out; (void)q; (void)n;
    }
    static int lb_have_avx2(void) { return 0; }
    static Py_ssize_t lb_run_avx2(const lb_quad* qd, int nq, uint64_t hdr, Py_ssize_t t, int nc, const uint8_t* b,
                Py_ssize_t p, Py_ssize_t n, int64_t offbase, Py_ssize_t i0, uint16_t* apid_o,
                uint16_t* seq_o, int64_t* ticks_o, int64_t* off_o, int32_t* len_o, Py_ssize_t* rows_o,
                double* vals) {
        (void)qd; (void)nq; (void)hdr; (void)t; (void)nc; (void)b; (void)p; (void)n; (void)offbase; (void)i0;
        (void)apid_o; (void)seq_o; (void)ticks_o; (void)off_o; (void)len_o; (void)rows_o; (void)vals;
        return 0;
    }
    static void lb_decode_pairs_ssse3(const uint8_t* pk, double* out, const lb_pair* pr, int n) {
        (void)pk; (void)out; (void)pr; (void)n;
    }
    static int lb_have_ssse3(void) { return 0; }
    #endif
    """
    ctypedef struct lb_pair:
        uint8_t shuf[16]
        uint64_t sbit[2]
        double bias[2]
        double scale[2]
        double add[2]
        int32_t chunk
        int32_t col
        int32_t two
    void lb_decode_pairs_ssse3(const uint8_t* pk, double* out, const lb_pair* pr, int n) nogil
    int lb_have_ssse3() nogil
    ctypedef struct lb_quad:
        uint8_t shuf[32]
        uint64_t sbit[4]
        double bias[4]
        double scale[4]
        double add[4]
        int32_t chunk[2]
        int32_t col
        int32_t ncols
    void lb_decode_quads_avx2(const uint8_t* pk, double* out, const lb_quad* q, int n) nogil
    int lb_have_avx2() nogil
    Py_ssize_t lb_run_avx2(const lb_quad* qd, int nq, uint64_t hdr, Py_ssize_t t, int nc, const uint8_t* b,
                           Py_ssize_t p, Py_ssize_t n, int64_t offbase, Py_ssize_t i0, uint16_t* apid_o,
                           uint16_t* seq_o, int64_t* ticks_o, int64_t* off_o, int32_t* len_o, Py_ssize_t* rows_o,
                           double* vals) nogil


cdef extern from *:
    """
    /* The run kernel (AVX-512 VBMI): a run of packets of one small layout (<= 64 bytes,
       integer fields only, at most 24 of them) back to back, taken four at a time.  The
       four headers are compared with the layout's (first word and length field in one
       masked 64-bit compare), their CRCs computed together (lb_crc16x4), and each packet
       is then decoded from one 64-byte load: vpermt2b puts every big-endian field,
       byte-reversed and zero-extended, into a 64-bit lane (eight fields per vector),
       a shift pair sign-extends the signed ones, vcvtqq2pd makes exact doubles, then
       * scale + add.  The plan (permutation indexes, shifts, scales) stays in registers
       for the whole run.  The kernel stops at the first group of four that is not a
       clean run (another APID, a bad CRC, too few bytes) and the scalar scanner takes
       over from there, so it never has to reject anything itself. */
    typedef struct __attribute__((aligned(64))) {
        uint8_t idx[3][64];
        int64_t shl[3][8];
        double scale[3][8];
        double add[3][8];
        uint64_t hdr;         /* bytes 0-1 and 4-5 of the header, little-endian u64 */
        int32_t shape;        /* 8 * vectors of eight columns (1..3) + bit v: vector v is FULL (see lb_run_vec) */
        int32_t ncols;
        int32_t total;        /* packet length */
        int32_t lastmask;     /* columns in the last vector, as a lane mask */
    } lb_run;

    #define LB_HDR_MASK 0x0000FFFF0000FFFFULL

    #if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    #define LB_RUN_TARGET __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vbmi")))

    /* one vector of eight columns; FULL: the vector has signed or scaled fields (a
       plain one, unsigned with scale 1 and add 0, skips the shifts and the arithmetic:
       x * 1.0 + 0.0 == x for every integer, so the result is the same bit for bit) */
    static inline __attribute__((always_inline)) LB_RUN_TARGET __m512d
    lb_run_vec(__m512i x, __m512i idx, __m512i shl, __m512d sc, __m512d ad, const int FULL) {
        /* index bit 6 picks from the zero vector: the lane's upper bytes become zero */
        __m512i y = _mm512_permutex2var_epi8(x, idx, _mm512_setzero_si512());
        if (!FULL) return _mm512_cvtepi64_pd(y);
        y = _mm512_srav_epi64(_mm512_sllv_epi64(y, shl), shl);
        return _mm512_add_pd(_mm512_mul_pd(_mm512_cvtepi64_pd(y), sc), ad);
    }

    static inline __attribute__((always_inline)) LB_RUN_TARGET Py_ssize_t
    lb_run_body(const lb_run* f, const int NV, const int K0, const int K1, const int K2,
                const uint8_t* b, Py_ssize_t p, Py_ssize_t n,
                int64_t offbase, Py_ssize_t i0, uint16_t* apid_o, uint16_t* seq_o, int64_t* ticks_o,
                int64_t* off_o, int32_t* len_o, Py_ssize_t* rows_o, double* vals) {
        const Py_ssize_t t = f->total;
        const int nc = f->ncols;
        const uint64_t hdr = f->hdr;
        const uint16_t apid = (uint16_t)(((hdr & 0xFF) << 8 | ((hdr >> 8) & 0xFF)) & 0x7FF);
        const __mmask8 lastm = (__mmask8)f->lastmask;
        const __m512i i0v = _mm512_load_si512(f->idx[0]), s0 = _mm512_load_si512(f->shl[0]);
        const __m512d c0 = _mm512_load_pd(f->scale[0]), a0 = _mm512_load_pd(f->add[0]);
        __m512i i1v = i0v, s1 = s0, i2v = i0v, s2 = s0;
        __m512d c1 = c0, a1 = a0, c2 = c0, a2 = a0;
        if (NV >= 2) {
            i1v = _mm512_load_si512(f->idx[1]); s1 = _mm512_load_si512(f->shl[1]);
            c1 = _mm512_load_pd(f->scale[1]); a1 = _mm512_load_pd(f->add[1]);
        }
        if (NV >= 3) {
            i2v = _mm512_load_si512(f->idx[2]); s2 = _mm512_load_si512(f->shl[2]);
            c2 = _mm512_load_pd(f->scale[2]); a2 = _mm512_load_pd(f->add[2]);
        }
        const __m128i apid4 = _mm_set1_epi16((short)apid), len4 = _mm_set1_epi32((int)t);
        const __m256i step4 = _mm256_setr_epi64x(0, 1, 2, 3), offs4 = _mm256_setr_epi64x(0, t, 2 * t, 3 * t);
        Py_ssize_t m = 0;
        /* 3t + 64 bytes: the last packet of the group is read with a full 64-byte load
           too (bytes past the packet are never picked by the indexes) */
        while (n - p >= 3 * t + 64) {
            const uint8_t* q = b + p;
            uint64_t h0, h1, h2, h3;
            uint16_t crc[4];
            memcpy(&h0, q, 8); memcpy(&h1, q + t, 8); memcpy(&h2, q + 2 * t, 8); memcpy(&h3, q + 3 * t, 8);
            if (((h0 & LB_HDR_MASK) ^ hdr) | ((h1 & LB_HDR_MASK) ^ hdr)
                    | ((h2 & LB_HDR_MASK) ^ hdr) | ((h3 & LB_HDR_MASK) ^ hdr))
                break;
            lb_crc16x4(q, t, crc);
            if (crc[0] | crc[1] | crc[2] | crc[3])
                break;
            for (int h = 0; h < 4; h++) {
                const uint8_t* pk = q + h * t;
                double* row = vals + m * nc;
                const __m512i x = _mm512_loadu_si512((const void*)pk);
                __m512d d = lb_run_vec(x, i0v, s0, c0, a0, K0);
                if (NV == 1) _mm512_mask_storeu_pd(row, lastm, d);
                else _mm512_storeu_pd(row, d);
                if (NV >= 2) {
                    d = lb_run_vec(x, i1v, s1, c1, a1, K1);
                    if (NV == 2) _mm512_mask_storeu_pd(row + 8, lastm, d);
                    else _mm512_storeu_pd(row + 8, d);
                }
                if (NV >= 3) {
                    d = lb_run_vec(x, i2v, s2, c2, a2, K2);
                    _mm512_mask_storeu_pd(row + 16, lastm, d);
                }
                uint16_t sq; uint64_t tk;
                memcpy(&sq, pk + 2, 2); memcpy(&tk, pk + 4, 8);
                seq_o[m] = (uint16_t)(LB_BSWAP16(sq) & 0x3FFF);
                ticks_o[m] = (int64_t)(LB_BSWAP64(tk) & 0xFFFFFFFFFFFFULL);
                m++;
            }
            /* the columns that do not depend on the bytes, one store per group */
            _mm_storel_epi64((__m128i*)(apid_o + m - 4), apid4);
            _mm_storeu_si128((__m128i*)(len_o + m - 4), len4);
            _mm256_storeu_si256((__m256i*)(rows_o + m - 4),
                                _mm256_add_epi64(_mm256_set1_epi64x((int64_t)(i0 + m - 4)), step4));
            _mm256_storeu_si256((__m256i*)(off_o + m - 4),
                                _mm256_add_epi64(_mm256_set1_epi64x(offbase + p), offs4));
            p += 4 * t;
        }
        return m;
    }

    /* Packets accepted from p on (a multiple of four); outputs are written from index 0
       of each pointer (the caller offsets them).  One specialised body per vector count
       and per plain/full vector (f->shape = 8 * nvec + full bits). */
    #define LB_RUN_ARGS b, p, n, offbase, i0, apid_o, seq_o, ticks_o, off_o, len_o, rows_o, vals
    #define LB_RUN_CASE(NV, K0, K1, K2) \
        case 8 * NV + K0 + 2 * K1 + 4 * K2: return lb_run_body(f, NV, K0, K1, K2, LB_RUN_ARGS);
    static LB_RUN_TARGET Py_ssize_t
    lb_run_avx512(const lb_run* f, const uint8_t* b, Py_ssize_t p, Py_ssize_t n, int64_t offbase,
                  Py_ssize_t i0, uint16_t* apid_o, uint16_t* seq_o, int64_t* ticks_o, int64_t* off_o,
                  int32_t* len_o, Py_ssize_t* rows_o, double* vals) {
        switch (f->shape) {
        LB_RUN_CASE(1, 0, 0, 0) LB_RUN_CASE(1, 1, 0, 0)
        LB_RUN_CASE(2, 0, 0, 0) LB_RUN_CASE(2, 1, 0, 0) LB_RUN_CASE(2, 0, 1, 0) LB_RUN_CASE(2, 1, 1, 0)
        LB_RUN_CASE(3, 0, 0, 0) LB_RUN_CASE(3, 1, 0, 0) LB_RUN_CASE(3, 0, 1, 0) LB_RUN_CASE(3, 1, 1, 0)
        LB_RUN_CASE(3, 0, 0, 1) LB_RUN_CASE(3, 1, 0, 1) LB_RUN_CASE(3, 0, 1, 1) LB_RUN_CASE(3, 1, 1, 1)
        default: return 0;
        }
    }
    /* int16 samples big-endian -> host, 64 bytes per step (seismic batches) */
    static LB_RUN_TARGET void lb_swap16_avx512(int16_t* dst, const uint8_t* src, Py_ssize_t n) {
        const __m512i sw = _mm512_set_epi8(
            62, 63, 60, 61, 58, 59, 56, 57, 54, 55, 52, 53, 50, 51, 48, 49,
            46, 47, 44, 45, 42, 43, 40, 41, 38, 39, 36, 37, 34, 35, 32, 33,
            30, 31, 28, 29, 26, 27, 24, 25, 22, 23, 20, 21, 18, 19, 16, 17,
            14, 15, 12, 13, 10, 11, 8, 9, 6, 7, 4, 5, 2, 3, 0, 1);
        Py_ssize_t i = 0;
        for (; i + 32 <= n; i += 32)
            _mm512_storeu_si512((void*)(dst + i),
                                _mm512_shuffle_epi8(_mm512_loadu_si512((const void*)(src + 2 * i)), sw));
        if (i < n) {
            const __mmask32 k = (__mmask32)((1ULL << (n - i)) - 1);
            _mm512_mask_storeu_epi16(dst + i, k,
                _mm512_shuffle_epi8(_mm512_maskz_loadu_epi16(k, src + 2 * i), sw));
        }
    }
    static int lb_have_avx512(void) {
        return (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
                && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl")
                && __builtin_cpu_supports("avx512vbmi")) ? 1 : 0;
    }
    #else
    static Py_ssize_t lb_run_avx512(const lb_run* f, const uint8_t* b, Py_ssize_t p, Py_ssize_t n, int64_t offbase,
                  Py_ssize_t i0, uint16_t* apid_o, uint16_t* seq_o, int64_t* ticks_o, int64_t* off_o,
                  int32_t* len_o, Py_ssize_t* rows_o, double* vals) {
        (void)f; (void)b; (void)p; (void)n; (void)offbase; (void)i0; (void)apid_o; (void)seq_o;
        (void)ticks_o; (void)off_o; (void)len_o; (void)rows_o; (void)vals;
        return 0;
    }
    static void lb_swap16_avx512(int16_t* dst, const uint8_t* src, Py_ssize_t n) {
        (void)dst; (void)src; (void)n;
    }
    static int lb_have_avx512(void) { return 0; }
    #endif
    """
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
    Py_ssize_t lb_run_avx512(const lb_run* f, const uint8_t* b, Py_ssize_t p, Py_ssize_t n, int64_t offbase,
                             Py_ssize_t i0, uint16_t* apid_o, uint16_t* seq_o, int64_t* ticks_o, int64_t* off_o,
                             int32_t* len_o, Py_ssize_t* rows_o, double* vals) nogil
    int lb_have_avx512() nogil
    void lb_swap16_avx512(int16_t* dst, const uint8_t* src, Py_ssize_t n) nogil


HAVE_SSSE3 = bool(lb_have_ssse3())
HAVE_AVX2 = bool(lb_have_avx2())
HAVE_AVX512 = bool(lb_have_avx512()) and HAVE_AVX2
_LEVELS = ("scalar", "ssse3", "avx2", "avx512")
SIMD_LEVELS = (("scalar",) + (("ssse3",) if HAVE_SSSE3 else ()) + (("avx2",) if HAVE_AVX2 else ())
               + (("avx512",) if HAVE_AVX512 else ()))
cdef int _simd = 0  # 0 scalar, 1 SSSE3 pairs, 2 AVX2 quads, 3 AVX2 quads + AVX-512 run kernel


def set_simd(level):
    """Choose the decoder: "avx512" (the run kernel for runs of small packets, AVX2
    elsewhere), "avx2", "ssse3" or "scalar" (True: the best this CPU has, False: scalar).
    Returns the previous level.  All give bit-identical results; the tests run each one
    the CPU supports."""
    global _simd
    prev = _LEVELS[_simd]
    if level is True:
        level = SIMD_LEVELS[len(SIMD_LEVELS) - 1]
    elif level is False or level is None:
        level = "scalar"
    if level not in SIMD_LEVELS:
        raise ValueError(f"decoder {level!r} is not available here: {SIMD_LEVELS}")
    _simd = _LEVELS.index(level)
    return prev


def simd():
    """The decoder in use: "avx512", "avx2", "ssse3" or "scalar"."""
    return _LEVELS[_simd]


set_simd("scalar" if __import__("os").environ.get("LUNABASE_PARSER_NO_SIMD") else True)


cdef inline uint16_t _be16(const uint8_t* p) noexcept nogil:
    cdef uint16_t v
    memcpy(&v, p, 2)
    return LB_BSWAP16(v)


cdef inline uint32_t _be32(const uint8_t* p) noexcept nogil:
    cdef uint32_t v
    memcpy(&v, p, 4)
    return LB_BSWAP32(v)


def crc16(data, uint16_t crc=0xFFFF):
    """CRC-16/CCITT-FALSE of a whole buffer with the slicing-by-8 tables."""
    cdef Py_buffer view
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        with nogil:
            crc = _crc16(<const uint8_t*>view.buf, view.len, crc)
    finally:
        PyBuffer_Release(&view)
    return crc


def crc_scan(data):
    """The CRC-only pass the benchmark compares against: walk packets by their length
    field and check each CRC (residue 0), nothing else.  Returns (good, bad, end)."""
    cdef Py_buffer view
    cdef Py_ssize_t p = 0, n, total
    cdef Py_ssize_t good = 0, bad = 0
    cdef uint16_t c1, c2
    cdef uint16_t c4[4]
    cdef int k
    cdef const uint8_t* b
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        b = <const uint8_t*>view.buf
        n = view.len
        with nogil:
            while n - p >= 6:
                total = _be16(b + p + 4) + 7
                if total > n - p:
                    break
                # the fastest CRC we have: four (else two) packets at a time when the
                # next ones have the same length, as the parser's run kernel does
                if (4 * total <= n - p and _be16(b + p + total + 4) + 7 == total
                        and _be16(b + p + 2 * total + 4) + 7 == total
                        and _be16(b + p + 3 * total + 4) + 7 == total):
                    lb_crc16x4(b + p, total, c4)
                    for k in range(4):
                        if c4[k] == 0:
                            good += 1
                        else:
                            bad += 1
                    p += 4 * total
                    continue
                if (n - p - total >= 6 and _be16(b + p + total + 4) + 7 == total
                        and 2 * total <= n - p):
                    _crc16x2(b + p, b + p + total, total, &c1, &c2)
                    good += (c1 == 0) + (c2 == 0)
                    bad += (c1 != 0) + (c2 != 0)
                    p += 2 * total
                    continue
                if _crc16(b + p, total, 0xFFFF) == 0:
                    good += 1
                else:
                    bad += 1
                p += total
    finally:
        PyBuffer_Release(&view)
    return good, bad, p


# ---------------------------------------------------------------------------------
# The scanner
# ---------------------------------------------------------------------------------

cdef enum:
    R_NONE = 0
    R_BAD_VERSION = 1
    R_BAD_LENGTH = 2
    R_TRUNCATED = 3
    R_BAD_CRC = 4
    R_UNKNOWN_APID = 5
    R_BAD_TYPE = 6

_REASON_NAMES = (None, BAD_VERSION, BAD_LENGTH, TRUNCATED, BAD_CRC, UNKNOWN_APID, BAD_TYPE)

cdef enum:
    T_U8 = 0
    T_I8 = 1
    T_U16 = 2
    T_I16 = 3
    T_U32 = 4
    T_I32 = 5
    T_F32 = 6

_TYPE_CODES = {"u8": T_U8, "i8": T_I8, "u16": T_U16, "i16": T_I16, "u32": T_U32, "i32": T_I32, "f32": T_F32}


cdef struct RejRange:
    Py_ssize_t start
    Py_ssize_t end
    int reason


cdef struct Scan:
    # resumable scanner state: the scan returns to the caller (holding the GIL) when an
    # accepted packet's APID has no output arrays yet, and picks up where it stopped
    Py_ssize_t p
    Py_ssize_t bad_start
    int bad_reason
    int need             # >= 0: layout index needing outputs; -1: scan finished
    int failed           # out of memory
    Py_ssize_t consumed
    # per accepted packet (capacity cap)
    Py_ssize_t count
    Py_ssize_t cap
    uint16_t* apid
    uint16_t* seq
    int64_t* ticks
    int64_t* offset
    int32_t* length
    # per layout: count so far, capacity and output pointers
    Py_ssize_t* cnt
    Py_ssize_t* lcap
    cnp.npy_intp** rows
    double** vals
    int16_t** samp
    # rejected ranges (growable)
    RejRange* rej
    Py_ssize_t rej_cap
    Py_ssize_t rej_count


cdef struct PreCrc:
    # CRCs of the packets after the current one, computed together with its own
    Py_ssize_t pos[3]
    uint16_t crc[3]
    int n               # how many are left
    int i               # the next one


cdef struct FieldC:
    # a numeric field for the branch-free decoder: the big-endian u32 that ENDS where the
    # field ends (always inside the packet), masked to the field's width, sign bit flipped
    int32_t load
    uint32_t mask
    uint32_t sbit
    int32_t pad_


cdef inline int _push_rej(Scan* o, Py_ssize_t start, Py_ssize_t end, int reason) noexcept nogil:
    cdef RejRange* r
    cdef Py_ssize_t nc
    if o.rej_count == o.rej_cap:
        nc = o.rej_cap * 2 if o.rej_cap else 16
        r = <RejRange*>realloc(o.rej, nc * sizeof(RejRange))
        if r == NULL:
            o.failed = 1
            return -1
        o.rej = r
        o.rej_cap = nc
    o.rej[o.rej_count].start = start
    o.rej[o.rej_count].end = end
    o.rej[o.rej_count].reason = reason
    o.rej_count += 1
    return 0


cdef inline double _u2d(uint64_t x) noexcept nogil:
    # exact integer -> double for 0 <= x < 2^52 through the exponent bits: no cvtsi2sd,
    # whose merge into its destination register chains every field on the previous one
    cdef double d
    x |= 0x4330000000000000ULL
    memcpy(&d, &x, 8)
    return d


cdef inline uint64_t _be64(const uint8_t* p) noexcept nogil:
    cdef uint64_t v
    memcpy(&v, p, 8)
    return LB_BSWAP64(v)


cdef inline void _swap16(int16_t* dst, const uint8_t* src, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef uint16_t v
    for i in range(n):
        memcpy(&v, src + 2 * i, 2)
        dst[i] = <int16_t>LB_BSWAP16(v)


cdef class Parser:
    """Parses containers (one MQTT payload = packets back to back) against a dictionary.

    ``parse(data)`` never raises on bad bytes: it skips, resynchronises and reports
    every skipped range in ``ParseResult.rejected``.
    """

    cdef readonly dict layouts
    cdef readonly Py_ssize_t max_length
    cdef int16_t lidx[2048]          # APID -> layout index, -1 unknown
    cdef int nlay
    cdef int32_t* lay_len
    cdef int32_t* lay_nnum
    cdef int32_t* lay_first          # index of the layout's first field in the f_* arrays
    cdef int32_t* lay_generic        # 1: has f32 fields, decode through the type switch
    cdef int32_t* lay_s_off          # sample block offset, -1 when none
    cdef int32_t* lay_s_n            # count * axes
    # per field: big-endian u32 loaded so that it ENDS where the field ends (always inside
    # the packet), masked to the field's width, sign bit flipped, then exponent trick
    cdef int32_t* f_off              # offset of the field's first byte
    cdef FieldC* f_c
    cdef lb_pair* pairs              # SIMD decode plan, per layout from lay_pair0
    cdef lb_quad* quads              # the same pairs two by two (AVX2), from lay_quad0
    cdef int32_t* lay_quad0
    cdef int32_t* lay_nquads
    cdef int32_t* lay_pair0
    cdef int32_t* lay_npairs         # 0: scalar loop for this layout
    cdef lb_run* runs                # AVX-512 run kernel plan per layout
    cdef int32_t* lay_run            # 1: the layout has a run kernel plan
    cdef readonly Py_ssize_t run_packets  # packets the run kernel took (a diagnostic)
    cdef int32_t* f_type
    cdef double* f_scale
    cdef double* f_add
    cdef Py_ssize_t min_len
    cdef list _lay_list              # ApidLayout per layout index
    cdef list _columns               # tuple of numeric column names per layout index

    implementation = "cython"

    def __cinit__(self):
        self.lay_len = self.lay_nnum = self.lay_first = self.lay_generic = NULL
        self.lay_s_off = self.lay_s_n = NULL
        self.f_off = self.f_type = NULL
        self.f_c = NULL
        self.pairs = NULL
        self.quads = NULL
        self.lay_quad0 = self.lay_nquads = NULL
        self.lay_pair0 = self.lay_npairs = NULL
        self.f_scale = self.f_add = NULL
        self.runs = NULL
        self.lay_run = NULL

    def __init__(self, dictionary=None, max_length=None):
        from wire.dictionary import load

        self.layouts = compile_layout(dictionary)
        self.max_length = max_length or (dictionary or load()).max_length
        cdef int i, j, nf, nl, size, np_, nq_
        for i in range(2048):
            self.lidx[i] = -1
        lays = list(self.layouts.values())
        self.nlay = len(lays)
        nl = max(1, self.nlay)
        nf = max(1, sum(len(l.numeric) for l in lays))
        self.lay_len = <int32_t*>malloc(nl * sizeof(int32_t))
        self.lay_nnum = <int32_t*>malloc(nl * sizeof(int32_t))
        self.lay_first = <int32_t*>malloc(nl * sizeof(int32_t))
        self.lay_generic = <int32_t*>malloc(nl * sizeof(int32_t))
        self.lay_s_off = <int32_t*>malloc(nl * sizeof(int32_t))
        self.lay_s_n = <int32_t*>malloc(nl * sizeof(int32_t))
        self.f_off = <int32_t*>malloc(nf * sizeof(int32_t))
        self.f_c = <FieldC*>malloc(nf * sizeof(FieldC))
        self.pairs = <lb_pair*>calloc(nf, sizeof(lb_pair))
        self.quads = <lb_quad*>aligned_alloc(32, ((nf * sizeof(lb_quad) + 31) // 32) * 32)
        self.lay_quad0 = <int32_t*>calloc(nl, sizeof(int32_t))
        self.lay_nquads = <int32_t*>calloc(nl, sizeof(int32_t))
        self.lay_pair0 = <int32_t*>calloc(nl, sizeof(int32_t))
        self.lay_npairs = <int32_t*>calloc(nl, sizeof(int32_t))
        self.runs = <lb_run*>aligned_alloc(64, nl * sizeof(lb_run))
        self.lay_run = <int32_t*>calloc(nl, sizeof(int32_t))
        self.f_type = <int32_t*>malloc(nf * sizeof(int32_t))
        self.f_scale = <double*>malloc(nf * sizeof(double))
        self.f_add = <double*>malloc(nf * sizeof(double))
        if (self.lay_len == NULL or self.lay_nnum == NULL or self.lay_first == NULL or self.lay_generic == NULL
                or self.lay_s_off == NULL or self.lay_s_n == NULL or self.f_off == NULL or self.f_c == NULL
                or self.pairs == NULL or self.lay_pair0 == NULL or self.lay_npairs == NULL
                or self.quads == NULL or self.lay_quad0 == NULL or self.lay_nquads == NULL
                or self.f_type == NULL or self.runs == NULL or self.lay_run == NULL
                or self.f_scale == NULL or self.f_add == NULL):
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
            self.lidx[lay.apid] = i
            self.lay_len[i] = lay.length
            self.lay_nnum[i] = len(lay.numeric)
            self.lay_first[i] = j
            self.lay_generic[i] = 0
            self.min_len = min(self.min_len, lay.length)
            for (name, off, typ, scale, add) in lay.numeric:
                size = _SIZES[typ]
                if off < ccsds.HEADER_LEN or off + size > lay.length - ccsds.CRC_LEN:
                    raise ValueError(f"{lay.name}.{name}: field outside the payload")
                self.f_off[j] = off
                self.f_c[j].load = off + size - 4
                self.f_c[j].mask = <uint32_t>((<uint64_t>1 << (8 * size)) - 1)
                self.f_c[j].sbit = <uint32_t>(<uint64_t>1 << (8 * size - 1)) if typ[0] == "i" else 0
                self.f_c[j].pad_ = 0
                self.f_type[j] = _TYPE_CODES[typ]
                self.f_scale[j] = scale
                self.f_add[j] = add
                if typ == "f32":
                    self.lay_generic[i] = 1
                j += 1
            self._plan_pairs(i, lay, np_)
            self._plan_quads(i, nq_)
            self._plan_run(i, lay)
            np_ += self.lay_npairs[i]
            nq_ += self.lay_nquads[i]
            if lay.samples is not None:
                self.lay_s_off[i] = lay.samples[0]
                self.lay_s_n[i] = lay.samples[1] * lay.samples[2]
                if lay.samples[0] + 2 * self.lay_s_n[i] > lay.length - ccsds.CRC_LEN:
                    raise ValueError(f"{lay.name}: sample block outside the payload")
            else:
                self.lay_s_off[i] = -1
                self.lay_s_n[i] = 0
            self._columns.append(tuple(f[0] for f in lay.numeric))
        if self.min_len == 1 << 30:
            self.min_len = MIN_PACKET

    cdef void _plan_pairs(self, int li, lay, int first):
        # consecutive numeric columns two by two, each pair read from one 16-byte window
        # of the packet; layouts with f32 fields or shorter than 16 bytes stay scalar
        cdef int k = 0, n = len(lay.numeric), m, lane, b, size, start
        cdef lb_pair* pr
        self.lay_pair0[li] = first
        self.lay_npairs[li] = 0
        if self.lay_generic[li] or lay.length < 16 or n == 0:
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
            pr = &self.pairs[first + m]
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
        self.lay_npairs[li] = m

    cdef void _plan_run(self, int li, lay):
        # the run kernel's plan: field k in lane k % 8 of vector k // 8; layouts it cannot
        # take (f32 fields, samples, longer than 64 bytes, > 24 columns) keep lay_run 0
        cdef lb_run* r = &self.runs[li]
        cdef int n = len(lay.numeric), j, v, lane, bb, size, nvec
        cdef uint16_t w0, lenf
        memset(r, 0, sizeof(lb_run))
        self.lay_run[li] = 0
        w0 = 0x0800 | lay.apid  # version 0, TM, secondary header
        lenf = lay.length - 7
        r.hdr = ((<uint64_t>(w0 >> 8)) | (<uint64_t>(w0 & 0xFF) << 8)
                 | (<uint64_t>(lenf >> 8) << 32) | (<uint64_t>(lenf & 0xFF) << 40))
        r.total = lay.length
        r.ncols = n
        if (self.lay_generic[li] or lay.samples is not None or n == 0 or n > 24
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
        self.lay_run[li] = 1

    cdef void _plan_quads(self, int li, int first):
        # two consecutive pairs make a quad when their columns are contiguous
        cdef int k = 0, m = 0, n = self.lay_npairs[li], lane, b
        cdef lb_pair* a
        cdef lb_pair* c
        cdef lb_quad* q
        self.lay_quad0[li] = first
        while k < n:
            a = &self.pairs[self.lay_pair0[li] + k]
            q = &self.quads[first + m]
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
                c = &self.pairs[self.lay_pair0[li] + k]
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
        self.lay_nquads[li] = m

    def __dealloc__(self):
        free(self.lay_len)
        free(self.lay_nnum)
        free(self.lay_first)
        free(self.lay_generic)
        free(self.lay_s_off)
        free(self.lay_s_n)
        free(self.f_off)
        free(self.f_c)
        free(self.pairs)
        free(self.quads)
        free(self.lay_quad0)
        free(self.lay_nquads)
        free(self.lay_pair0)
        free(self.lay_npairs)
        free(self.f_type)
        free(self.f_scale)
        free(self.f_add)
        free(self.runs)
        free(self.lay_run)

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
        cdef Scan o
        cdef int nl = max(1, self.nlay), li
        cdef cnp.npy_intp dims[3]
        cdef Py_ssize_t cap = n // self.min_len + 1, q
        memset(&o, 0, sizeof(Scan))
        o.bad_start = -1
        o.cap = cap
        o.cnt = <Py_ssize_t*>calloc(nl, sizeof(Py_ssize_t))
        o.lcap = <Py_ssize_t*>calloc(nl, sizeof(Py_ssize_t))
        o.rows = <cnp.npy_intp**>calloc(nl, sizeof(cnp.npy_intp*))
        o.vals = <double**>calloc(nl, sizeof(double*))
        o.samp = <int16_t**>calloc(nl, sizeof(int16_t*))
        outs = {}  # layout index -> [rows, values, raw]
        order = []  # layout indexes in order of first acceptance
        try:
            if o.cnt == NULL or o.lcap == NULL or o.rows == NULL or o.vals == NULL or o.samp == NULL:
                raise MemoryError()
            dims[0] = cap
            apid_a = cnp.PyArray_EMPTY(1, dims, cnp.NPY_UINT16, 0)
            seq_a = cnp.PyArray_EMPTY(1, dims, cnp.NPY_UINT16, 0)
            ticks_a = cnp.PyArray_EMPTY(1, dims, cnp.NPY_INT64, 0)
            off_a = cnp.PyArray_EMPTY(1, dims, cnp.NPY_INT64, 0)
            len_a = cnp.PyArray_EMPTY(1, dims, cnp.NPY_INT32, 0)
            o.apid = <uint16_t*>cnp.PyArray_DATA(apid_a)
            o.seq = <uint16_t*>cnp.PyArray_DATA(seq_a)
            o.ticks = <int64_t*>cnp.PyArray_DATA(ticks_a)
            o.offset = <int64_t*>cnp.PyArray_DATA(off_a)
            o.length = <int32_t*>cnp.PyArray_DATA(len_a)
            while True:
                o.need = -1
                with nogil:
                    self._scan(buf, n, final, base, &o)
                if o.failed:
                    raise MemoryError()
                if o.need < 0:
                    break
                # first packet of this APID: outputs sized for every remaining byte
                li = o.need
                lay = self._lay_list[li]
                dims[0] = (n - o.p) // self.lay_len[li] + 1
                rows = cnp.PyArray_EMPTY(1, dims, cnp.NPY_INTP, 0)
                dims[1] = self.lay_nnum[li]
                values = cnp.PyArray_EMPTY(2, dims, cnp.NPY_FLOAT64, 0)
                raw = None
                if lay.samples is not None:
                    dims[1] = lay.samples[1]
                    dims[2] = lay.samples[2]
                    raw = cnp.PyArray_EMPTY(3, dims, cnp.NPY_INT16, 0)
                    o.samp[li] = <int16_t*>cnp.PyArray_DATA(raw)
                o.lcap[li] = dims[0]
                o.rows[li] = <cnp.npy_intp*>cnp.PyArray_DATA(rows)
                o.vals[li] = <double*>cnp.PyArray_DATA(values)
                outs[li] = (rows, values, raw)
                order.append(li)
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
            free(o.cnt)
            free(o.lcap)
            free(o.rows)
            free(o.vals)
            free(o.samp)
            free(o.rej)

    cdef void _scan(self, const uint8_t* b, Py_ssize_t n, bint final, Py_ssize_t base, Scan* o) noexcept nogil:
        cdef Py_ssize_t p = o.p, total, bad_start = o.bad_start, whole, k, i
        cdef int reason, bad_reason = o.bad_reason, li, j, nnum
        cdef uint16_t w0
        cdef Py_ssize_t maxlen = self.max_length
        cdef const uint8_t* pk
        cdef double* vrow
        cdef const FieldC* fc
        cdef double v
        cdef PreCrc pre                # CRCs already computed for the next packets
        pre.n = 0
        pre.i = 0
        cdef const double* fs
        cdef const double* fa
        # hot output pointers in locals: stores through them cannot make the compiler
        # reload them from *o after every packet
        cdef Py_ssize_t count = o.count
        cdef uint16_t* apid_o = o.apid
        cdef uint16_t* seq_o = o.seq
        cdef int64_t* ticks_o = o.ticks
        cdef int64_t* off_o = o.offset
        cdef int32_t* len_o = o.length
        cdef Py_ssize_t* cnt_o = o.cnt
        cdef cnp.npy_intp** rows_o = o.rows
        cdef double** vals_o = o.vals
        cdef int16_t** samp_o = o.samp
        # the run kernel: armed by an accepted packet of a layout it can take, tried at
        # the next packet; after it stops, the scalar scan handles the group it stopped
        # at (run_block) before it is tried again
        cdef bint use_run = _simd == 3
        cdef bint use_run2 = _simd >= 2
        cdef int run_li = -1, run_kind = 0
        cdef Py_ssize_t run_block = 0, m
        while p < n:
            if run_li >= 0 and p >= run_block and bad_start < 0:
                k = cnt_o[run_li]
                if run_kind == 1:
                    m = lb_run_avx512(self.runs + run_li, b, p, n, base, count, apid_o + count, seq_o + count,
                                      ticks_o + count, off_o + count, len_o + count,
                                      <Py_ssize_t*>rows_o[run_li] + k, vals_o[run_li] + k * self.lay_nnum[run_li])
                else:
                    m = lb_run_avx2(self.quads + self.lay_quad0[run_li], self.lay_nquads[run_li],
                                    self.runs[run_li].hdr, self.lay_len[run_li], self.lay_nnum[run_li],
                                    b, p, n, base, count, apid_o + count, seq_o + count,
                                    ticks_o + count, off_o + count, len_o + count,
                                    <Py_ssize_t*>rows_o[run_li] + k, vals_o[run_li] + k * self.lay_nnum[run_li])
                count += m
                self.run_packets += m
                cnt_o[run_li] = k + m
                p += m * self.lay_len[run_li]
                run_block = p + 4 * self.lay_len[run_li]
                if p >= n:
                    break
            reason = R_NONE
            whole = 0
            if n - p < 6:
                if not final:
                    break  # wait for the rest of the header
                reason = R_TRUNCATED
            else:
                pk = b + p
                w0 = _be16(pk)
                total = <Py_ssize_t>_be16(pk + 4) + 7
                if (w0 >> 13) != 0:
                    reason = R_BAD_VERSION
                elif total < 14 or total > maxlen:
                    reason = R_BAD_LENGTH
                else:
                    li = self.lidx[w0 & 0x7FF]
                    if li < 0:
                        reason = R_UNKNOWN_APID
                    elif ((w0 >> 11) & 3) != 1:  # type TM with a secondary header
                        reason = R_BAD_TYPE
                    elif total != self.lay_len[li]:
                        reason = R_BAD_LENGTH
                    if total > n - p:
                        # only a header that fully matches its dictionary entry is worth
                        # waiting for; anything else is garbage to resync over
                        if reason == R_NONE:
                            if not final:
                                break
                            reason = R_TRUNCATED
                    elif self._crc_at(b, n, p, total, w0, &pre) != 0:
                        reason = R_BAD_CRC
                    elif reason != R_NONE:
                        whole = total  # the CRC proves the boundary: skip it whole
                    else:
                        if vals_o[li] == NULL:
                            o.need = li  # outputs first (with the GIL), then resume here
                            break
                        if bad_start >= 0:
                            if _push_rej(o, bad_start, p, bad_reason) < 0:
                                return
                            bad_start = -1
                        # accepted: header columns, then the fields, decoded while the
                        # CRC of the next packet is still in flight
                        i = count
                        count = i + 1
                        apid_o[i] = w0 & 0x7FF
                        seq_o[i] = _be16(pk + 2) & 0x3FFF
                        ticks_o[i] = <int64_t>(_be64(pk + 4) & 0xFFFFFFFFFFFFULL)
                        off_o[i] = p + base
                        len_o[i] = <int32_t>total
                        k = cnt_o[li]
                        cnt_o[li] = k + 1
                        rows_o[li][k] = i
                        nnum = self.lay_nnum[li]
                        vrow = vals_o[li] + k * nnum
                        j = self.lay_first[li]
                        if _simd >= 2 and self.lay_nquads[li]:
                            lb_decode_quads_avx2(pk, vrow, self.quads + self.lay_quad0[li], self.lay_nquads[li])
                        elif _simd == 1 and self.lay_npairs[li]:
                            lb_decode_pairs_ssse3(pk, vrow, self.pairs + self.lay_pair0[li], self.lay_npairs[li])
                        elif self.lay_generic[li]:
                            _decode_generic(pk, vrow, nnum, self.f_off + j, self.f_type + j,
                                            self.f_scale + j, self.f_add + j)
                        else:
                            fc = self.f_c + j
                            fs = self.f_scale + j
                            fa = self.f_add + j
                            for j in range(nnum):
                                v = _u2d((_be32(pk + fc[j].load) & fc[j].mask) ^ fc[j].sbit) - _u2d(fc[j].sbit)
                                vrow[j] = v * fs[j] + fa[j]
                        if samp_o[li] != NULL:
                            if use_run:
                                lb_swap16_avx512(samp_o[li] + k * self.lay_s_n[li], pk + self.lay_s_off[li],
                                                 self.lay_s_n[li])
                            else:
                                _swap16(samp_o[li] + k * self.lay_s_n[li], pk + self.lay_s_off[li], self.lay_s_n[li])
                        p += total
                        if use_run and self.lay_run[li]:
                            run_li = li
                            run_kind = 1
                        elif use_run2 and self.lay_nquads[li] and samp_o[li] == NULL:
                            run_li = li
                            run_kind = 2
                        else:
                            run_li = -1
                        continue
            if whole:
                if bad_start >= 0:
                    if _push_rej(o, bad_start, p, bad_reason) < 0:
                        return
                    bad_start = -1
                if _push_rej(o, p, p + whole, reason) < 0:
                    return
                p += whole
                continue
            if bad_start < 0:
                bad_start = p
                bad_reason = reason
            p += 1
        o.count = count
        o.p = p
        o.bad_start = bad_start
        o.bad_reason = bad_reason
        if o.need >= 0:
            return
        o.consumed = p
        if bad_start >= 0:
            if final:
                _push_rej(o, bad_start, n, bad_reason)
                o.consumed = n
            else:
                # bytes already judged bad are consumed; the tail may still start a packet
                _push_rej(o, bad_start, p, bad_reason)

    cdef inline uint16_t _crc_at(self, const uint8_t* b, Py_ssize_t n, Py_ssize_t p, Py_ssize_t total,
                                 uint16_t w0, PreCrc* pre) noexcept nogil:
        # CRC residue of the packet at p (its length already checked).  When the next
        # packets have the same first word and length, their CRCs are computed together
        # (four, else two, independent chains) and kept for when the scan gets there:
        # same bytes, same length, same CRC
        cdef uint16_t c[4]
        cdef Py_ssize_t q = p + total
        if pre.n > 0:
            if pre.pos[pre.i] == p:
                pre.n -= 1
                pre.i += 1
                return pre.crc[pre.i - 1]
            pre.n = 0  # the scan went elsewhere (a rejected packet): drop them
        if (n - p >= 4 * total and _be16(b + q) == w0 and <Py_ssize_t>_be16(b + q + 4) + 7 == total
                and _be16(b + q + total) == w0 and <Py_ssize_t>_be16(b + q + total + 4) + 7 == total
                and _be16(b + q + 2 * total) == w0 and <Py_ssize_t>_be16(b + q + 2 * total + 4) + 7 == total):
            lb_crc16x4(b + p, total, c)
            pre.pos[0] = q
            pre.pos[1] = q + total
            pre.pos[2] = q + 2 * total
            pre.crc[0] = c[1]
            pre.crc[1] = c[2]
            pre.crc[2] = c[3]
            pre.n = 3
            pre.i = 0
            return c[0]
        if n - q >= total and _be16(b + q) == w0 and <Py_ssize_t>_be16(b + q + 4) + 7 == total:
            _crc16x2(b + p, b + q, total, &c[0], &c[1])
            pre.pos[0] = q
            pre.crc[0] = c[1]
            pre.n = 1
            pre.i = 0
            return c[0]
        return _crc16(b + p, total, 0xFFFF)

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


_SIZES = {"u8": 1, "i8": 1, "u16": 2, "i16": 2, "u32": 4, "i32": 4, "f32": 4}


cdef object _trim(object a, Py_ssize_t m):
    # outputs were sized for the worst case; keep a view when little is wasted, else a
    # compact copy so a result does not pin a mostly empty allocation
    cdef Py_ssize_t cap = len(a)
    if m == cap:
        return a
    if m * 4 >= cap or (cap - m) * a.itemsize * (a.size // cap if cap else 1) < 65536:
        return a[:m]
    return a[:m].copy()


cdef void _decode_generic(const uint8_t* pk, double* vrow, int nnum, const int32_t* fo, const int32_t* ft,
                          const double* fs, const double* fa) noexcept nogil:
    # layouts with f32 fields: one type test per field
    cdef int j
    cdef double v
    cdef uint32_t u32
    cdef float f32
    for j in range(nnum):
        if ft[j] == T_U16:
            v = _u2d(_be16(pk + fo[j])) - 4503599627370496.0
        elif ft[j] == T_U32:
            v = _u2d(_be32(pk + fo[j])) - 4503599627370496.0
        elif ft[j] == T_U8:
            v = _u2d(pk[fo[j]]) - 4503599627370496.0
        elif ft[j] == T_I16:
            v = <double>(<int16_t>_be16(pk + fo[j]))
        elif ft[j] == T_I32:
            v = <double>(<int32_t>_be32(pk + fo[j]))
        elif ft[j] == T_I8:
            v = <double>(<signed char>pk[fo[j]])
        else:
            u32 = _be32(pk + fo[j])
            memcpy(&f32, &u32, 4)
            v = <double>f32
        vrow[j] = v * fs[j] + fa[j]


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
