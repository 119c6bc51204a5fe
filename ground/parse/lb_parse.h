/* The packet parser's C (included by _parse_c.pyx; the CRC part also by _bench_c.pyx).
 *
 * Types shared with Cython (the decode plans, the parser's tables, the resumable scan
 * state), the CRC tables, CPU detection and the per-level instances of lb_level.h: the
 * scanner, the run kernels, the field decoders, the CRC and the byte swaps are written
 * once there and compiled here once per instruction-set level (baseline, SSSE3, AVX2,
 * AVX-512 VBMI) under that level's target, whatever flags the extension is built with.
 * lb_cpu_level() says which levels this CPU runs; the Cython side picks one at run time
 * (set_simd), so a wheel or an sdist build runs at full speed where the CPU allows and
 * correctly where it does not.
 *
 * Everything is static: one translation unit per extension, no symbols exported.
 */
#ifndef LB_PARSE_H
#define LB_PARSE_H

#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if PY_BIG_ENDIAN
#error "lunabase's parser assumes a little-endian host"
#endif

#if defined(__GNUC__) || defined(__clang__)
#define LB_BSWAP16(x) __builtin_bswap16(x)
#define LB_BSWAP32(x) __builtin_bswap32(x)
#define LB_BSWAP64(x) __builtin_bswap64(x)
#define LB_INLINE inline __attribute__((always_inline))
#define LB_NOINLINE __attribute__((noinline))
#define LB_ALIGNED(n) __attribute__((aligned(n)))
#else
#define LB_BSWAP16(x) ((uint16_t)(((x) >> 8) | ((x) << 8)))
#define LB_BSWAP32(x) ((((x) & 0xFFu) << 24) | (((x) & 0xFF00u) << 8) | (((x) >> 8) & 0xFF00u) | ((x) >> 24))
#define LB_BSWAP64(x) (((uint64_t)LB_BSWAP32((uint32_t)(x)) << 32) | LB_BSWAP32((uint32_t)((x) >> 32)))
#define LB_INLINE inline
#define LB_NOINLINE
#define LB_ALIGNED(n)
#endif

/* x86-64 with GCC or clang: the SIMD levels are compiled (with target pragmas) */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define LB_X86 1
#include <immintrin.h>
#include <cpuid.h>
#else
#define LB_X86 0
#endif

/* ------------------------------------------------------------------------------- */
/* CRC-16/CCITT-FALSE tables for slicing-by-8: lb_T[0] is the byte-wise table,     */
/* lb_T[k][b] the register contribution of byte b followed by k zero bytes.  Filled */
/* at import from wire.ccsds.CRC_TABLE (lb_crc_tables).                            */
/* ------------------------------------------------------------------------------- */
static uint16_t lb_T[8][256];

static void lb_crc_tables(const uint8_t* base /* 512 bytes, big-endian entries */) {
    for (int i = 0; i < 256; i++) lb_T[0][i] = (uint16_t)((base[2 * i] << 8) | base[2 * i + 1]);
    for (int k = 1; k < 8; k++)
        for (int i = 0; i < 256; i++) {
            uint16_t c = lb_T[k - 1][i];
            lb_T[k][i] = (uint16_t)((c << 8) ^ lb_T[0][c >> 8]);
        }
}

#define LB_CRC_STEP(a, w) (a) = (uint16_t)(lb_T[7][(uint8_t)(w) ^ ((a) >> 8)] \
    ^ lb_T[6][(uint8_t)((w) >> 8) ^ ((a) & 0xFF)] ^ lb_T[5][(uint8_t)((w) >> 16)] \
    ^ lb_T[4][(uint8_t)((w) >> 24)] ^ lb_T[3][(uint8_t)((w) >> 32)] \
    ^ lb_T[2][(uint8_t)((w) >> 40)] ^ lb_T[1][(uint8_t)((w) >> 48)] ^ lb_T[0][(uint8_t)((w) >> 56)])
#define LB_CRC_BYTE(a, c) (a) = (uint16_t)(((a) << 8) ^ lb_T[0][((a) >> 8) ^ (c)])

/* One long packet's CRC as four chains over its quarters (independent dependency
   chains, so the table loads of one fill the latency of the others), combined with the
   CRC's linearity: R(I, A B) = shift(R(I, A), |B|) ^ R(0, B), where shift(c, k) is c fed
   k zero bytes (c * x^8k mod P, a linear map: two 256-entry tables per shift).  Used for
   a packet of the dictionary's length of at least LB_SPLIT_MIN bytes whose neighbours are
   not of its length (a SEISMIC batch among housekeeping). */
#define LB_SPLIT_MIN 128
typedef struct {
    int32_t total;     /* the packet length the tables are for */
    int32_t quarter;   /* bytes per chain (a multiple of 8); the last chain also takes the rest */
    uint16_t t[3][2][256];  /* shift by total - (j + 1) * quarter bytes: [j][0] high byte, [j][1] low */
} lb_split;

static void lb_split_init(lb_split* s, Py_ssize_t total) {
    s->total = (int32_t)total;
    s->quarter = (int32_t)((total / 4) & ~(Py_ssize_t)7);
    for (int j = 0; j < 3; j++) {
        const Py_ssize_t k = total - (Py_ssize_t)(j + 1) * s->quarter;
        uint16_t basis[16];
        for (int bit = 0; bit < 16; bit++) {  /* the images of the 16 unit registers */
            uint16_t c = (uint16_t)(1u << bit);
            for (Py_ssize_t z = 0; z < k; z++) c = (uint16_t)((c << 8) ^ lb_T[0][c >> 8]);
            basis[bit] = c;
        }
        for (int v = 0; v < 256; v++) {
            uint16_t hi = 0, lo = 0;
            for (int bit = 0; bit < 8; bit++)
                if (v & (1 << bit)) { hi ^= basis[8 + bit]; lo ^= basis[bit]; }
            s->t[j][0][v] = hi;
            s->t[j][1][v] = lo;
        }
    }
}

/* ------------------------------------------------------------------------------- */
/* Decode plans (built by Parser.__init__ from compile_layout(), read by the levels) */
/* ------------------------------------------------------------------------------- */

/* a numeric field for the branch-free scalar decoder: the big-endian u32 that ENDS
   where the field ends (always inside the packet), masked to the field's width, sign
   bit flipped, then the exponent trick */
typedef struct {
    int32_t load;
    uint32_t mask;
    uint32_t sbit;
    int32_t pad_;
} lb_field;

/* SSSE3: two fields per step from one 16-byte window: pshufb puts each big-endian field
   zero-extended into a little-endian 64-bit lane, the sign bit is flipped and the
   exponent bits of 2^52 ORed in, then (lane - (2^52 + sign bit)) is the exact integer
   as a double; * scale + add as packed float64 (bit-identical to the scalar arithmetic) */
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

/* AVX2: four fields per step, two 16-byte windows (one per 128-bit lane) */
typedef struct LB_ALIGNED(32) {
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

/* The AVX-512 VBMI run plan of a small integer layout (<= 64 bytes, <= 24 fields):
   field k in lane k % 8 of vector k // 8; vpermt2b indexes (bit 6: a byte of the zero
   vector), sign-extension shifts, scales and adds. */
typedef struct LB_ALIGNED(64) {
    uint8_t idx[3][64];
    int64_t shl[3][8];
    double scale[3][8];
    double add[3][8];
    uint64_t hdr;         /* bytes 0-1 and 4-5 of the header, little-endian u64 */
    int32_t shape;        /* 8 * vectors of eight columns (1..3) + bit v: vector v is FULL */
    int32_t ncols;
    int32_t total;        /* packet length */
    int32_t lastmask;     /* columns in the last vector, as a lane mask */
} lb_run;

#define LB_HDR_MASK 0x0000FFFF0000FFFFULL

/* one dictionary packet type as the scanner sees it */
typedef struct {
    int32_t len;       /* packet length */
    int32_t nnum;      /* numeric columns */
    int32_t first;     /* index of its first field in the field arrays */
    int32_t generic;   /* 1: has f32 fields, decode through the type switch */
    int32_t s_off;     /* sample block offset, -1 when none */
    int32_t s_n;       /* samples * axes */
    int32_t pair0, npairs;   /* SSSE3 plan (npairs 0: scalar) */
    int32_t quad0, nquads;   /* AVX2 plan */
    int32_t run;       /* 1: runs[] holds an AVX-512 run plan */
    int32_t split;     /* 1: splits[] holds the four-chain CRC tables for its length */
} lb_layout;

/* everything a scan reads: owned by the Cython Parser */
typedef struct {
    int16_t lidx[2048];      /* APID -> layout index, -1 unknown */
    int32_t nlay;
    Py_ssize_t max_length;
    lb_layout* lay;
    lb_run* runs;            /* per layout, 64-byte aligned */
    lb_field* f_c;           /* per field */
    int32_t* f_off;
    int32_t* f_type;
    double* f_scale;
    double* f_add;
    lb_pair* pairs;
    lb_quad* quads;          /* 32-byte aligned */
    lb_split* splits;        /* per layout */
    Py_ssize_t run_packets;  /* packets a run kernel took (a diagnostic) */
} lb_plan;

enum { LB_T_U8 = 0, LB_T_I8, LB_T_U16, LB_T_I16, LB_T_U32, LB_T_I32, LB_T_F32 };
enum { LB_R_NONE = 0, LB_R_BAD_VERSION, LB_R_BAD_LENGTH, LB_R_TRUNCATED, LB_R_BAD_CRC,
       LB_R_UNKNOWN_APID, LB_R_BAD_TYPE };

typedef struct {
    Py_ssize_t start, end;
    int reason;
} lb_rej;

/* resumable scanner state: the scan returns to the caller (who takes the GIL) when an
   accepted packet's APID has no output arrays yet, and picks up where it stopped */
typedef struct {
    Py_ssize_t p;
    Py_ssize_t bad_start;
    int bad_reason;
    int need;             /* >= 0: layout index needing outputs; -1: scan finished */
    int failed;           /* out of memory */
    Py_ssize_t consumed;
    /* per accepted packet (capacity cap) */
    Py_ssize_t count, cap;
    uint16_t* apid;
    uint16_t* seq;
    int64_t* ticks;
    int64_t* offset;
    int32_t* length;
    /* per layout: count so far, capacity and output pointers */
    Py_ssize_t* cnt;
    Py_ssize_t* lcap;
    Py_ssize_t** rows;
    double** vals;
    int16_t** samp;
    /* rejected ranges (growable) */
    lb_rej* rej;
    Py_ssize_t rej_cap, rej_count;
} lb_scan;

static int lb_push_rej(lb_scan* o, Py_ssize_t start, Py_ssize_t end, int reason) {
    if (o->rej_count == o->rej_cap) {
        Py_ssize_t nc = o->rej_cap ? 2 * o->rej_cap : 16;
        lb_rej* r = (lb_rej*)realloc(o->rej, (size_t)nc * sizeof(lb_rej));
        if (r == NULL) { o->failed = 1; return -1; }
        o->rej = r;
        o->rej_cap = nc;
    }
    o->rej[o->rej_count].start = start;
    o->rej[o->rej_count].end = end;
    o->rej[o->rej_count].reason = reason;
    o->rej_count++;
    return 0;
}

/* CRCs of the packets after the current one, computed together with its own */
typedef struct {
    Py_ssize_t pos[3];
    uint16_t crc[3];
    int n;   /* how many are left */
    int i;   /* the next one */
} lb_precrc;

/* the run kernels' common parameters: the scan position and the outputs, each written
   from index 0 (the caller offsets them) */
#define LB_RUN_PARAMS const uint8_t* b, Py_ssize_t p, Py_ssize_t n, int64_t offbase, Py_ssize_t i0, \
    uint16_t* apid_o, uint16_t* seq_o, int64_t* ticks_o, int64_t* off_o, int32_t* len_o, Py_ssize_t* rows_o, \
    double* vals
#define LB_RUN_ARGS b, p, n, offbase, i0, apid_o, seq_o, ticks_o, off_o, len_o, rows_o, vals
#define LB_RUN_CASE(NV, K0, K1, K2) \
    case 8 * NV + K0 + 2 * K1 + 4 * K2: return LB_FN(lb_run_body)(f, NULL, 0, 1, NV, K0, K1, K2, LB_RUN_ARGS);

/* ------------------------------------------------------------------------------- */
/* CPU detection (cpuid + xgetbv: the OS must save the vector state too)            */
/* ------------------------------------------------------------------------------- */
enum { LB_SCALAR = 0, LB_SSSE3 = 1, LB_AVX2 = 2, LB_AVX512 = 3 };

static int lb_cpu_level(void) {
#if LB_X86
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return LB_SCALAR;
    const int ssse3 = (c >> 9) & 1, osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, movbe = (c >> 22) & 1;
    const int popcnt = (c >> 23) & 1;
    if (!ssse3) return LB_SCALAR;
    if (!(osxsave && avx && movbe && popcnt)) return LB_SSSE3;
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    (void)hi;
    if ((lo & 0x6) != 0x6) return LB_SSSE3;                 /* XMM and YMM state */
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return LB_SSSE3;
    const int avx2 = (b >> 5) & 1, bmi1 = (b >> 3) & 1, bmi2 = (b >> 8) & 1;
    if (!(avx2 && bmi1 && bmi2)) return LB_SSSE3;
    const int f = (b >> 16) & 1, dq = (b >> 17) & 1, bw = (b >> 30) & 1, vl = (b >> 31) & 1;
    const int vbmi = (c >> 1) & 1;
    if (!(f && dq && bw && vl && vbmi) || (lo & 0xE6) != 0xE6) return LB_AVX2;   /* + opmask, ZMM state */
    return LB_AVX512;
#else
    return LB_SCALAR;
#endif
}

/* the CPU's model name (cpuid leaves 0x80000002..4), for the benchmark's report */
static inline void lb_cpu_model(char out[49]) {
    memset(out, 0, 49);
#if LB_X86
    unsigned r[12];
    if (__get_cpuid_max(0x80000000, NULL) >= 0x80000004) {
        for (unsigned i = 0; i < 3; i++) __get_cpuid(0x80000002 + i, &r[4 * i], &r[4 * i + 1], &r[4 * i + 2], &r[4 * i + 3]);
        memcpy(out, r, 48);
    }
#endif
}

/* ------------------------------------------------------------------------------- */
/* The levels: lb_level.h once per instruction set, under that level's target       */
/* ------------------------------------------------------------------------------- */
#define LB_CAT_(a, b) a##_##b
#define LB_CAT(a, b) LB_CAT_(a, b)
#define LB_FN(name) LB_CAT(name, LB_SFX)

#define LB_LEVEL 0
#define LB_SFX scalar
#include "lb_level.h"
#undef LB_LEVEL
#undef LB_SFX

#if LB_X86
/* x86-64-v3's integer extensions come with AVX2 (movbe folds the byte swaps into the
   loads, bmi2 gives flag-free shifts for the CRC's table indexes); FMA is left out on
   purpose: raw * scale + add must round like the pure twin (setup.py also passes
   -ffp-contract=off) */
#define LB_TGT_SSSE3 "ssse3"
#define LB_TGT_AVX2 "avx2,bmi,bmi2,movbe,popcnt,lzcnt"
#if defined(__clang__)
#define LB_TGT_AVX512 "avx2,bmi,bmi2,movbe,popcnt,lzcnt,avx512f,avx512bw,avx512dq,avx512vl,avx512vbmi"
#else
/* scheduled for the AVX-512 VBMI cores (Ice Lake and later, Zen 4): measured ~10 % on
   the run kernel against generic tuning, the same code as -march=native there */
#define LB_TGT_AVX512 "avx2,bmi,bmi2,movbe,popcnt,lzcnt,avx512f,avx512bw,avx512dq,avx512vl,avx512vbmi,tune=icelake-server"
#endif
#define LB_PRAGMA_(x) _Pragma(#x)
#if defined(__clang__)
#define LB_TARGET_PUSH(t) LB_PRAGMA_(clang attribute push(__attribute__((target(t))), apply_to = function))
#define LB_TARGET_POP LB_PRAGMA_(clang attribute pop)
#else
#define LB_TARGET_PUSH(t) LB_PRAGMA_(GCC push_options) LB_PRAGMA_(GCC target(t))
#define LB_TARGET_POP LB_PRAGMA_(GCC pop_options)
#endif
LB_TARGET_PUSH(LB_TGT_SSSE3)
#define LB_LEVEL 1
#define LB_SFX ssse3
#include "lb_level.h"
#undef LB_LEVEL
#undef LB_SFX
LB_TARGET_POP

LB_TARGET_PUSH(LB_TGT_AVX2)
#define LB_LEVEL 2
#define LB_SFX avx2
#include "lb_level.h"
#undef LB_LEVEL
#undef LB_SFX
LB_TARGET_POP

LB_TARGET_PUSH(LB_TGT_AVX512)
#define LB_LEVEL 3
#define LB_SFX avx512
#include "lb_level.h"
#undef LB_LEVEL
#undef LB_SFX
LB_TARGET_POP
#endif /* LB_X86 */

/* ------------------------------------------------------------------------------- */
/* Dispatch tables, indexed by level (a level the build has no code for falls back  */
/* to the scalar one; lb_cpu_level never returns it there)                          */
/* ------------------------------------------------------------------------------- */
typedef void (*lb_scan_fn)(lb_plan*, const uint8_t*, Py_ssize_t, int, Py_ssize_t, lb_scan*);
typedef uint16_t (*lb_crc_fn)(const uint8_t*, Py_ssize_t, uint16_t);

#if LB_X86
#define LB_LEVELS4(name) {LB_CAT(name, scalar), LB_CAT(name, ssse3), LB_CAT(name, avx2), LB_CAT(name, avx512)}
#else
#define LB_LEVELS4(name) {LB_CAT(name, scalar), LB_CAT(name, scalar), LB_CAT(name, scalar), LB_CAT(name, scalar)}
#endif
static const lb_scan_fn lb_scans[4] = LB_LEVELS4(lb_scan);
typedef Py_ssize_t (*lb_census_fn)(const lb_plan*, const uint8_t*, Py_ssize_t, Py_ssize_t, Py_ssize_t*);
static const lb_census_fn lb_censuses[4] = LB_LEVELS4(lb_census);
static const lb_crc_fn lb_crcs[4] = LB_LEVELS4(lb_crc16);
#ifdef LB_CRCSCAN
/* the benchmark's CRC-only pass (lb_crcscan.h), only in the benchmark's extension */
typedef void (*lb_crcscan_fn)(const uint8_t*, Py_ssize_t, lb_split* const*, Py_ssize_t, Py_ssize_t*, Py_ssize_t*,
                              Py_ssize_t*);
static const lb_crcscan_fn lb_crcscans[4] = LB_LEVELS4(lb_crcscan);
#endif

/* how this extension was compiled, for the benchmark's report */
#if defined(__clang__)
#define LB_COMPILER "clang " __clang_version__
#elif defined(__GNUC__)
#define LB_COMPILER "gcc " __VERSION__
#else
#define LB_COMPILER "unknown"
#endif
#ifndef LB_BUILD_FLAGS
#define LB_BUILD_FLAGS "unknown"
#endif
#if defined(__AVX512F__)
#define LB_BUILD_ISA "avx512f"
#elif defined(__AVX2__)
#define LB_BUILD_ISA "avx2"
#elif defined(__SSSE3__)
#define LB_BUILD_ISA "ssse3"
#elif defined(__x86_64__)
#define LB_BUILD_ISA "x86-64"
#else
#define LB_BUILD_ISA "other"
#endif

#endif /* LB_PARSE_H */
