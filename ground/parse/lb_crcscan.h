/* The CRC-only pass `lunabase bench parse` compares the parser against (included per
 * level by lb_level.h in the benchmark's extension only, _bench_c): walk packets by
 * their length field and check each CRC (residue 0), nothing else, with the fastest CRC
 * the parser has at this level: four packets at a time when four of the same length
 * follow, else two, else one, a long one as four chains over its quarters when
 * by_len[length] has the tables (the parser has them for its layouts' lengths).
 * Counts good and bad packets and where it stopped. */
static void LB_FN(lb_crcscan)(const uint8_t* b, Py_ssize_t n, lb_split* const* by_len, Py_ssize_t nlen,
                              Py_ssize_t* good_o, Py_ssize_t* bad_o, Py_ssize_t* end_o) {
    Py_ssize_t p = 0, good = 0, bad = 0;
    uint16_t c[4];
    while (n - p >= 6) {
        const Py_ssize_t total = (Py_ssize_t)LB_FN(lb_be16)(b + p + 4) + 7;
        if (total > n - p)
            break;
        if (4 * total <= n - p && (Py_ssize_t)LB_FN(lb_be16)(b + p + total + 4) + 7 == total
                && (Py_ssize_t)LB_FN(lb_be16)(b + p + 2 * total + 4) + 7 == total
                && (Py_ssize_t)LB_FN(lb_be16)(b + p + 3 * total + 4) + 7 == total) {
            LB_FN(lb_crc16x4_in)(b + p, total, c);
            const Py_ssize_t g = (c[0] == 0) + (c[1] == 0) + (c[2] == 0) + (c[3] == 0);
            good += g;
            bad += 4 - g;
            p += 4 * total;
            continue;
        }
        if (n - p - total >= 6 && 2 * total <= n - p && (Py_ssize_t)LB_FN(lb_be16)(b + p + total + 4) + 7 == total) {
            LB_FN(lb_crc16x2)(b + p, b + p + total, total, &c[0], &c[1]);
            good += (c[0] == 0) + (c[1] == 0);
            bad += (c[0] != 0) + (c[1] != 0);
            p += 2 * total;
            continue;
        }
        const lb_split* sp = total < nlen ? by_len[total] : NULL;
        if ((sp != NULL ? LB_FN(lb_crc16_split)(b + p, sp) : LB_FN(lb_crc16_in)(b + p, total, 0xFFFF)) == 0)
            good++;
        else
            bad++;
        p += total;
    }
    *good_o = good;
    *bad_o = bad;
    *end_o = p;
}
