/* One instruction-set level of the parser: the CRC, the field decoders, the byte swap,
 * the run kernel and the scanner, written once.  lb_parse.h includes this file once
 * per level, under that level's target pragma, with
 *   LB_LEVEL  0 baseline (scalar decode), 1 SSSE3 (two fields per step),
 *             2 AVX2 (four fields per step, the run kernel around it),
 *             3 AVX-512 VBMI (the run kernel with a whole packet per load)
 *   LB_SFX    the suffix of every function defined here (LB_FN(scan) -> lb_scan_avx2)
 * so everything on the hot path is compiled for the level it runs at, and every call
 * inside a level stays inside it.  No include guard on purpose.
 */

/* --- big-endian loads ---------------------------------------------------------- */
static LB_INLINE uint16_t LB_FN(lb_be16)(const uint8_t* p) { uint16_t v; memcpy(&v, p, 2); return LB_BSWAP16(v); }
static LB_INLINE uint32_t LB_FN(lb_be32)(const uint8_t* p) { uint32_t v; memcpy(&v, p, 4); return LB_BSWAP32(v); }
static LB_INLINE uint64_t LB_FN(lb_be64)(const uint8_t* p) { uint64_t v; memcpy(&v, p, 8); return LB_BSWAP64(v); }

/* exact integer -> double for 0 <= x < 2^52 through the exponent bits: no cvtsi2sd,
   whose merge into its destination register chains every field on the previous one */
static LB_INLINE double LB_FN(lb_u2d)(uint64_t x) {
    double d;
    x |= 0x4330000000000000ULL;
    memcpy(&d, &x, 8);
    return d;
}

/* --- CRC-16/CCITT-FALSE, slicing-by-8 (little-endian host: byte j of an 8-byte
       chunk is bits 8j..8j+7) ------------------------------------------------------ */
static LB_INLINE uint16_t LB_FN(lb_crc16_in)(const uint8_t* p, Py_ssize_t n, uint16_t crc) {
    uint64_t w;
    while (n >= 8) { memcpy(&w, p, 8); LB_CRC_STEP(crc, w); p += 8; n -= 8; }
    while (n > 0) { LB_CRC_BYTE(crc, p[0]); p++; n--; }
    return crc;
}

/* out of line, for crc16() and the dispatch table */
static uint16_t LB_FN(lb_crc16)(const uint8_t* p, Py_ssize_t n, uint16_t crc) {
    return LB_FN(lb_crc16_in)(p, n, crc);
}

/* two packets of the same length at once: two independent dependency chains, so the
   table lookups of one fill the other's latency */
static LB_INLINE void LB_FN(lb_crc16x2)(const uint8_t* p, const uint8_t* q, Py_ssize_t n,
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

/* four packets of length n back to back (p, p+n, p+2n, p+3n) */
static LB_INLINE void LB_FN(lb_crc16x4_in)(const uint8_t* p, Py_ssize_t n, uint16_t* out) {
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

/* out of line for the scanner and the CRC-only pass: they keep many values live, and
   inlined into them the four chains no longer fit in the registers (the run kernel,
   whose plan lives in vector registers, inlines it) */
static LB_NOINLINE void LB_FN(lb_crc16x4)(const uint8_t* p, Py_ssize_t n, uint16_t* out) {
    LB_FN(lb_crc16x4_in)(p, n, out);
}

/* one packet of s->total bytes as four chains (see lb_split in lb_parse.h) */
static LB_INLINE uint16_t LB_FN(lb_crc16_split)(const uint8_t* p, const lb_split* s) {
    const Py_ssize_t q = s->quarter;
    uint16_t a = 0xFFFF, c = 0, d = 0, e = 0;
    const uint8_t* r = p;
    for (Py_ssize_t k = 0; k < q; k += 8) {
        uint64_t w0, w1, w2, w3;
        memcpy(&w0, r, 8); memcpy(&w1, r + q, 8); memcpy(&w2, r + 2 * q, 8); memcpy(&w3, r + 3 * q, 8);
        LB_CRC_STEP(a, w0); LB_CRC_STEP(c, w1); LB_CRC_STEP(d, w2); LB_CRC_STEP(e, w3);
        r += 8;
    }
    e = LB_FN(lb_crc16_in)(p + 4 * q, s->total - 4 * q, e);  /* the last chain takes the rest */
    return (uint16_t)(s->t[0][0][a >> 8] ^ s->t[0][1][a & 0xFF] ^ s->t[1][0][c >> 8] ^ s->t[1][1][c & 0xFF]
                      ^ s->t[2][0][d >> 8] ^ s->t[2][1][d & 0xFF] ^ e);
}

/* --- field decoders -------------------------------------------------------------- */

/* integer layouts, one field per step, branch-free */
static LB_INLINE void LB_FN(lb_decode_scalar)(const uint8_t* pk, double* vrow, int nnum, const lb_field* fc,
                                              const double* fs, const double* fa) {
    for (int j = 0; j < nnum; j++) {
        const double v = LB_FN(lb_u2d)((LB_FN(lb_be32)(pk + fc[j].load) & fc[j].mask) ^ fc[j].sbit)
                         - LB_FN(lb_u2d)(fc[j].sbit);
        vrow[j] = v * fs[j] + fa[j];
    }
}

/* layouts with f32 fields: one type test per field */
static void LB_FN(lb_decode_generic)(const uint8_t* pk, double* vrow, int nnum, const int32_t* fo,
                                     const int32_t* ft, const double* fs, const double* fa) {
    for (int j = 0; j < nnum; j++) {
        double v;
        const uint8_t* q = pk + fo[j];
        switch (ft[j]) {
        case LB_T_U16: v = LB_FN(lb_u2d)(LB_FN(lb_be16)(q)) - 4503599627370496.0; break;
        case LB_T_U32: v = LB_FN(lb_u2d)(LB_FN(lb_be32)(q)) - 4503599627370496.0; break;
        case LB_T_U8: v = LB_FN(lb_u2d)(q[0]) - 4503599627370496.0; break;
        case LB_T_I16: v = (double)(int16_t)LB_FN(lb_be16)(q); break;
        case LB_T_I32: v = (double)(int32_t)LB_FN(lb_be32)(q); break;
        case LB_T_I8: v = (double)(signed char)q[0]; break;
        default: {
            uint32_t u = LB_FN(lb_be32)(q);
            float f;
            memcpy(&f, &u, 4);
            v = (double)f;
        }
        }
        vrow[j] = v * fs[j] + fa[j];
    }
}

#if LB_LEVEL >= 1
static LB_INLINE void LB_FN(lb_decode_pairs)(const uint8_t* pk, double* out, const lb_pair* pr, int n) {
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
#endif

#if LB_LEVEL >= 2
static LB_INLINE void LB_FN(lb_decode_quads)(const uint8_t* pk, double* out, const lb_quad* q, int n) {
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
#endif

/* int16 samples big-endian -> host (seismic batches) */
static LB_INLINE void LB_FN(lb_swap16)(int16_t* dst, const uint8_t* src, Py_ssize_t n) {
    Py_ssize_t i = 0;
#if LB_LEVEL >= 3
    const __m512i sw = _mm512_set_epi8(
        62, 63, 60, 61, 58, 59, 56, 57, 54, 55, 52, 53, 50, 51, 48, 49,
        46, 47, 44, 45, 42, 43, 40, 41, 38, 39, 36, 37, 34, 35, 32, 33,
        30, 31, 28, 29, 26, 27, 24, 25, 22, 23, 20, 21, 18, 19, 16, 17,
        14, 15, 12, 13, 10, 11, 8, 9, 6, 7, 4, 5, 2, 3, 0, 1);
    for (; i + 32 <= n; i += 32)
        _mm512_storeu_si512((void*)(dst + i), _mm512_shuffle_epi8(_mm512_loadu_si512((const void*)(src + 2 * i)), sw));
    if (i < n) {
        const __mmask32 k = (__mmask32)((1ULL << (n - i)) - 1);
        _mm512_mask_storeu_epi16(dst + i, k, _mm512_shuffle_epi8(_mm512_maskz_loadu_epi16(k, src + 2 * i), sw));
    }
#else
    /* the compiler vectorises this for the level's vector width */
    for (; i < n; i++) {
        uint16_t v;
        memcpy(&v, src + 2 * i, 2);
        dst[i] = (int16_t)LB_BSWAP16(v);
    }
#endif
}

/* --- the run kernel ----------------------------------------------------------------
   A run of packets of one integer layout back to back, taken four at a time: the four
   headers compared with the layout's (first word and length field in one masked 64-bit
   compare), their CRCs computed together, then each packet decoded, and the columns
   that do not depend on the bytes stored once per group.  It stops at the first group
   of four that is not a clean run (another APID, a bad CRC, too few bytes) and the
   scanner takes over from there, so it never has to reject anything itself.

   The per-packet decode is the level's: AVX-512 VBMI (VBMI: 1) decodes a whole packet
   (<= 64 bytes, <= 24 fields) from one 64-byte load, vpermt2b putting every big-endian
   field byte-reversed and zero-extended into a 64-bit lane (eight fields per vector), a
   shift pair sign-extending the signed ones, vcvtqq2pd making exact doubles, then
   * scale + add, with the plan held in registers for the whole run; otherwise (VBMI: 0,
   AVX2 and AVX-512 levels) the AVX2 quad decoder.  Packets accepted from p on (a
   multiple of four); outputs are written from index 0 of each pointer. */
#if LB_LEVEL >= 2
#if LB_LEVEL >= 3
/* one vector of eight columns; FULL: the vector has signed or scaled fields (a plain
   one, unsigned with scale 1 and add 0, skips the shifts and the arithmetic: x * 1.0 +
   0.0 == x for every integer, so the result is the same bit for bit) */
static LB_INLINE __m512d LB_FN(lb_run_vec)(__m512i x, __m512i idx, __m512i shl, __m512d sc, __m512d ad,
                                           const int FULL) {
    /* index bit 6 picks from the zero vector: the lane's upper bytes become zero */
    __m512i y = _mm512_permutex2var_epi8(x, idx, _mm512_setzero_si512());
    if (!FULL) return _mm512_cvtepi64_pd(y);
    y = _mm512_srav_epi64(_mm512_sllv_epi64(y, shl), shl);
    return _mm512_add_pd(_mm512_mul_pd(_mm512_cvtepi64_pd(y), sc), ad);
}
#endif

static LB_INLINE Py_ssize_t LB_FN(lb_run_body)(const lb_run* f, const lb_quad* qd, int nq, const int VBMI,
                                               const int NV, const int K0, const int K1, const int K2,
                                               LB_RUN_PARAMS) {
    const Py_ssize_t t = f->total;
    const int nc = f->ncols;
    const uint64_t hdr = f->hdr;
    const uint16_t apid = (uint16_t)(((hdr & 0xFF) << 8 | ((hdr >> 8) & 0xFF)) & 0x7FF);
#if LB_LEVEL >= 3
    const __mmask8 lastm = (__mmask8)f->lastmask;
    __m512i i0v = _mm512_setzero_si512(), s0 = i0v, i1v = i0v, s1 = i0v, i2v = i0v, s2 = i0v;
    __m512d c0 = _mm512_setzero_pd(), a0 = c0, c1 = c0, a1 = c0, c2 = c0, a2 = c0;
    if (VBMI) {
        i0v = _mm512_load_si512(f->idx[0]); s0 = _mm512_load_si512(f->shl[0]);
        c0 = _mm512_load_pd(f->scale[0]); a0 = _mm512_load_pd(f->add[0]);
        if (NV >= 2) {
            i1v = _mm512_load_si512(f->idx[1]); s1 = _mm512_load_si512(f->shl[1]);
            c1 = _mm512_load_pd(f->scale[1]); a1 = _mm512_load_pd(f->add[1]);
        }
        if (NV >= 3) {
            i2v = _mm512_load_si512(f->idx[2]); s2 = _mm512_load_si512(f->shl[2]);
            c2 = _mm512_load_pd(f->scale[2]); a2 = _mm512_load_pd(f->add[2]);
        }
    }
#else
    (void)NV; (void)K0; (void)K1; (void)K2;
#endif
    const __m128i apid4 = _mm_set1_epi16((short)apid), len4 = _mm_set1_epi32((int)t);
    const __m256i step4 = _mm256_setr_epi64x(0, 1, 2, 3), offs4 = _mm256_setr_epi64x(0, t, 2 * t, 3 * t);
    /* VBMI reads a full 64-byte load at the last packet of the group too (bytes past
       the packet are never picked by the indexes); the quads stay inside the packet */
    const Py_ssize_t need = VBMI ? 3 * t + 64 : 4 * t;
    Py_ssize_t m = 0;
    while (n - p >= need) {
        const uint8_t* q = b + p;
        uint64_t h0, h1, h2, h3;
        uint16_t crc[4];
        memcpy(&h0, q, 8); memcpy(&h1, q + t, 8); memcpy(&h2, q + 2 * t, 8); memcpy(&h3, q + 3 * t, 8);
        if (((h0 & LB_HDR_MASK) ^ hdr) | ((h1 & LB_HDR_MASK) ^ hdr)
                | ((h2 & LB_HDR_MASK) ^ hdr) | ((h3 & LB_HDR_MASK) ^ hdr))
            break;
        LB_FN(lb_crc16x4_in)(q, t, crc);
        if (crc[0] | crc[1] | crc[2] | crc[3])
            break;
        for (int h = 0; h < 4; h++) {
            const uint8_t* pk = q + h * t;
            double* row = vals + m * nc;
#if LB_LEVEL >= 3
            if (VBMI) {
                const __m512i x = _mm512_loadu_si512((const void*)pk);
                __m512d d = LB_FN(lb_run_vec)(x, i0v, s0, c0, a0, K0);
                if (NV == 1) _mm512_mask_storeu_pd(row, lastm, d);
                else _mm512_storeu_pd(row, d);
                if (NV >= 2) {
                    d = LB_FN(lb_run_vec)(x, i1v, s1, c1, a1, K1);
                    if (NV == 2) _mm512_mask_storeu_pd(row + 8, lastm, d);
                    else _mm512_storeu_pd(row + 8, d);
                }
                if (NV >= 3) {
                    d = LB_FN(lb_run_vec)(x, i2v, s2, c2, a2, K2);
                    _mm512_mask_storeu_pd(row + 16, lastm, d);
                }
            } else
#endif
            {
                LB_FN(lb_decode_quads)(pk, row, qd, nq);
            }
            seq_o[m] = (uint16_t)(LB_FN(lb_be16)(pk + 2) & 0x3FFF);
            ticks_o[m] = (int64_t)(LB_FN(lb_be64)(pk + 4) & 0xFFFFFFFFFFFFULL);
            m++;
        }
        /* the columns that do not depend on the bytes, one store per group */
        _mm_storel_epi64((__m128i*)(apid_o + m - 4), apid4);
        _mm_storeu_si128((__m128i*)(len_o + m - 4), len4);
        _mm256_storeu_si256((__m256i*)(rows_o + m - 4),
                            _mm256_add_epi64(_mm256_set1_epi64x((int64_t)(i0 + m - 4)), step4));
        _mm256_storeu_si256((__m256i*)(off_o + m - 4), _mm256_add_epi64(_mm256_set1_epi64x(offbase + p), offs4));
        p += 4 * t;
    }
    return m;
}

/* the AVX2 decoder in the run loop (any integer layout with a quad plan) */
static LB_NOINLINE Py_ssize_t LB_FN(lb_run_quads)(const lb_run* f, const lb_quad* qd, int nq, LB_RUN_PARAMS) {
    return LB_FN(lb_run_body)(f, qd, nq, 0, 1, 0, 0, 0, LB_RUN_ARGS);
}

#if LB_LEVEL >= 3
/* one specialised body per vector count and per plain/full vector (f->shape) */
static LB_NOINLINE Py_ssize_t LB_FN(lb_run_vbmi)(const lb_run* f, LB_RUN_PARAMS) {
    switch (f->shape) {
    LB_RUN_CASE(1, 0, 0, 0) LB_RUN_CASE(1, 1, 0, 0)
    LB_RUN_CASE(2, 0, 0, 0) LB_RUN_CASE(2, 1, 0, 0) LB_RUN_CASE(2, 0, 1, 0) LB_RUN_CASE(2, 1, 1, 0)
    LB_RUN_CASE(3, 0, 0, 0) LB_RUN_CASE(3, 1, 0, 0) LB_RUN_CASE(3, 0, 1, 0) LB_RUN_CASE(3, 1, 1, 0)
    LB_RUN_CASE(3, 0, 0, 1) LB_RUN_CASE(3, 1, 0, 1) LB_RUN_CASE(3, 0, 1, 1) LB_RUN_CASE(3, 1, 1, 1)
    default: return 0;
    }
}
#endif
#endif /* LB_LEVEL >= 2 */

/* --- the scanner ------------------------------------------------------------------ */

/* CRC residue of the packet at p (its length already checked).  When the next packets
   have the same first word and length, their CRCs are computed together (four, else
   two, independent chains) and kept for when the scan gets there: same bytes, same
   length, same CRC.  Else a long packet of its layout's length (sp) runs as four chains
   over its quarters. */
static LB_INLINE uint16_t LB_FN(lb_crc_at)(const uint8_t* b, Py_ssize_t n, Py_ssize_t p, Py_ssize_t total,
                                           uint16_t w0, lb_precrc* pre, const lb_split* sp) {
    uint16_t c[4];
    const Py_ssize_t q = p + total;
    if (pre->n > 0) {
        if (pre->pos[pre->i] == p) {
            pre->n--;
            return pre->crc[pre->i++];
        }
        pre->n = 0;  /* the scan went elsewhere (a rejected packet): drop them */
    }
#define LB_SAME(at) (LB_FN(lb_be16)(b + (at)) == w0 && (Py_ssize_t)LB_FN(lb_be16)(b + (at) + 4) + 7 == total)
    if (n - p >= 4 * total && LB_SAME(q) && LB_SAME(q + total) && LB_SAME(q + 2 * total)) {
        LB_FN(lb_crc16x4)(b + p, total, c);
        pre->pos[0] = q; pre->pos[1] = q + total; pre->pos[2] = q + 2 * total;
        pre->crc[0] = c[1]; pre->crc[1] = c[2]; pre->crc[2] = c[3];
        pre->n = 3;
        pre->i = 0;
        return c[0];
    }
    if (n - q >= total && LB_SAME(q)) {
        LB_FN(lb_crc16x2)(b + p, b + q, total, &c[0], &c[1]);
        pre->pos[0] = q;
        pre->crc[0] = c[1];
        pre->n = 1;
        pre->i = 0;
        return c[0];
    }
#undef LB_SAME
    if (sp != NULL && sp->total == total)
        return LB_FN(lb_crc16_split)(b + p, sp);
    return LB_FN(lb_crc16_in)(b + p, total, 0xFFFF);
}

/* The census the outputs are sized from: the packets of each layout found by walking
   the length fields from the start of a clean container, over at most `limit` bytes
   and up to the first thing that is not a packet of the dictionary.  Returns the bytes
   walked (the caller extrapolates; the scan grows the outputs when it finds more). */
static Py_ssize_t LB_FN(lb_census)(const lb_plan* P, const uint8_t* b, Py_ssize_t n, Py_ssize_t limit,
                                   Py_ssize_t* counts) {
    Py_ssize_t p = 0;
    if (limit < n)
        n = limit;
    while (n - p >= 6) {
        const uint16_t w0 = LB_FN(lb_be16)(b + p);
        const Py_ssize_t total = (Py_ssize_t)LB_FN(lb_be16)(b + p + 4) + 7;
        const int li = (w0 >> 13) ? -1 : P->lidx[w0 & 0x7FF];
        if (li < 0 || total != P->lay[li].len || total > n - p)
            break;
        counts[li]++;
        p += total;
    }
    return p;
}

/* One pass over the container with the reference scanner's rules (version, length
   bounds, the strict-plausibility wait rule, CRC, CRC-proven packets skipped whole,
   byte-by-byte resync with one range per run of garbage); an accepted packet is decoded
   at once, while it is in L1.  Returns with o->need >= 0 when an accepted packet's
   layout has no outputs yet (the caller allocates them and calls again). */
static void LB_FN(lb_scan)(lb_plan* P, const uint8_t* b, Py_ssize_t n, int final, Py_ssize_t base, lb_scan* o) {
    Py_ssize_t p = o->p, bad_start = o->bad_start;
    int bad_reason = o->bad_reason;
    const Py_ssize_t maxlen = P->max_length;
    const lb_layout* lay = P->lay;
    lb_precrc pre;
    pre.n = 0;
    pre.i = 0;
    /* hot output pointers in locals: stores through them cannot make the compiler
       reload them from *o after every packet */
    Py_ssize_t count = o->count;
    uint16_t* const apid_o = o->apid;
    uint16_t* const seq_o = o->seq;
    int64_t* const ticks_o = o->ticks;
    int64_t* const off_o = o->offset;
    int32_t* const len_o = o->length;
    Py_ssize_t* const cnt_o = o->cnt;
    Py_ssize_t** const rows_o = o->rows;
    double** const vals_o = o->vals;
    int16_t** const samp_o = o->samp;
#if LB_LEVEL >= 2
    /* the run kernel: armed by an accepted packet of a layout it can take, tried at the
       next packet; after it stops, the scan handles the group it stopped at
       (run_block) before it is tried again */
    int run_li = -1;
    Py_ssize_t run_block = 0;
#endif
    while (p < n) {
#if LB_LEVEL >= 2
        if (run_li >= 0 && p >= run_block && bad_start < 0) {
            /* not even the next packet continues the run (mixed traffic): no call */
            uint64_t h;
            if (n - p < 8 || (memcpy(&h, b + p, 8), (h & LB_HDR_MASK) != P->runs[run_li].hdr)) {
                run_li = -1;
                goto scan_one;
            }
            const Py_ssize_t k = cnt_o[run_li];
            const lb_layout* L = lay + run_li;
            /* no further than the outputs have room for: the scan asks for more there */
            Py_ssize_t m, room = o->cap - count, nr = n;
            if (o->lcap[run_li] - k < room)
                room = o->lcap[run_li] - k;
            if ((n - p) / L->len > room)
                nr = p + room * L->len;
#if LB_LEVEL >= 3
            if (L->run)
                m = LB_FN(lb_run_vbmi)(P->runs + run_li, b, p, nr, base, count, apid_o + count, seq_o + count,
                                       ticks_o + count, off_o + count, len_o + count, rows_o[run_li] + k,
                                       vals_o[run_li] + k * L->nnum);
            else
#endif
                m = LB_FN(lb_run_quads)(P->runs + run_li, P->quads + L->quad0, L->nquads, b, p, nr, base, count,
                                        apid_o + count, seq_o + count, ticks_o + count, off_o + count,
                                        len_o + count, rows_o[run_li] + k, vals_o[run_li] + k * L->nnum);
            count += m;
            P->run_packets += m;
            cnt_o[run_li] = k + m;
            p += m * L->len;
            run_block = p + 4 * L->len;
            if (p >= n)
                break;
        }
    scan_one:;
#endif
        int reason = LB_R_NONE;
        Py_ssize_t whole = 0;
        if (n - p < 6) {
            if (!final)
                break;  /* wait for the rest of the header */
            reason = LB_R_TRUNCATED;
        } else {
            const uint8_t* pk = b + p;
            const uint16_t w0 = LB_FN(lb_be16)(pk);
            const Py_ssize_t total = (Py_ssize_t)LB_FN(lb_be16)(pk + 4) + 7;
            int li = -1;
            if ((w0 >> 13) != 0) {
                reason = LB_R_BAD_VERSION;
            } else if (total < 14 || total > maxlen) {
                reason = LB_R_BAD_LENGTH;
            } else {
                li = P->lidx[w0 & 0x7FF];
                if (li < 0)
                    reason = LB_R_UNKNOWN_APID;
                else if (((w0 >> 11) & 3) != 1)  /* type TM with a secondary header */
                    reason = LB_R_BAD_TYPE;
                else if (total != lay[li].len)
                    reason = LB_R_BAD_LENGTH;
                if (total > n - p) {
                    /* only a header that fully matches its dictionary entry is worth
                       waiting for; anything else is garbage to resync over */
                    if (reason == LB_R_NONE) {
                        if (!final)
                            break;
                        reason = LB_R_TRUNCATED;
                    }
                } else if (LB_FN(lb_crc_at)(b, n, p, total, w0, &pre,
                                            li >= 0 && lay[li].split ? P->splits + li : NULL) != 0) {
                    reason = LB_R_BAD_CRC;
                } else if (reason != LB_R_NONE) {
                    whole = total;  /* the CRC proves the boundary: skip it whole */
                } else {
                    const lb_layout* L = lay + li;
                    if (count >= o->cap || cnt_o[li] >= o->lcap[li]) {
                        o->need = li;  /* outputs first (with the GIL), then resume here */
                        break;
                    }
                    if (bad_start >= 0) {
                        if (lb_push_rej(o, bad_start, p, bad_reason) < 0)
                            return;
                        bad_start = -1;
                    }
                    /* accepted: header columns, then the fields */
                    const Py_ssize_t i = count++;
                    apid_o[i] = w0 & 0x7FF;
                    seq_o[i] = LB_FN(lb_be16)(pk + 2) & 0x3FFF;
                    ticks_o[i] = (int64_t)(LB_FN(lb_be64)(pk + 4) & 0xFFFFFFFFFFFFULL);
                    off_o[i] = p + base;
                    len_o[i] = (int32_t)total;
                    const Py_ssize_t k = cnt_o[li];
                    cnt_o[li] = k + 1;
                    rows_o[li][k] = i;
                    const int nnum = L->nnum;
                    double* const vrow = vals_o[li] + k * nnum;
                    const int j = L->first;
#if LB_LEVEL >= 2
                    if (L->nquads)
                        LB_FN(lb_decode_quads)(pk, vrow, P->quads + L->quad0, L->nquads);
                    else
#elif LB_LEVEL >= 1
                    if (L->npairs)
                        LB_FN(lb_decode_pairs)(pk, vrow, P->pairs + L->pair0, L->npairs);
                    else
#endif
                    if (L->generic)
                        LB_FN(lb_decode_generic)(pk, vrow, nnum, P->f_off + j, P->f_type + j, P->f_scale + j,
                                                 P->f_add + j);
                    else
                        LB_FN(lb_decode_scalar)(pk, vrow, nnum, P->f_c + j, P->f_scale + j, P->f_add + j);
                    if (samp_o[li] != NULL)
                        LB_FN(lb_swap16)(samp_o[li] + k * L->s_n, pk + L->s_off, L->s_n);
                    p += total;
#if LB_LEVEL >= 3
                    run_li = (L->run || (L->nquads && samp_o[li] == NULL)) ? li : -1;
#elif LB_LEVEL >= 2
                    run_li = (L->nquads && samp_o[li] == NULL) ? li : -1;
#endif
                    continue;
                }
            }
        }
        if (whole) {
            if (bad_start >= 0) {
                if (lb_push_rej(o, bad_start, p, bad_reason) < 0)
                    return;
                bad_start = -1;
            }
            if (lb_push_rej(o, p, p + whole, reason) < 0)
                return;
            p += whole;
            continue;
        }
        if (bad_start < 0) {
            bad_start = p;
            bad_reason = reason;
        }
        p++;
    }
    o->count = count;
    o->p = p;
    o->bad_start = bad_start;
    o->bad_reason = bad_reason;
    if (o->need >= 0)
        return;
    o->consumed = p;
    if (bad_start >= 0) {
        if (final) {
            lb_push_rej(o, bad_start, n, bad_reason);
            o->consumed = n;
        } else {
            /* bytes already judged bad are consumed; the tail may still start a packet */
            lb_push_rej(o, bad_start, p, bad_reason);
        }
    }
}

#ifdef LB_CRCSCAN
#include "lb_crcscan.h"
#endif
