/* ASCII character helpers shared by the parsers (base layer), independent of the locale. */
#ifndef DSPY_BASE_ASCII_H
#define DSPY_BASE_ASCII_H

/* Value of a hexadecimal digit, or -1 when `c` is not one. */
static inline int dspy__hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Offset of the first ASCII control character (0x00-0x1f, 0x7f) in `s`, or -1 when it has
 * none: what must never reach an HTTP header line (CR and LF would start another one). */
static inline long dspy__find_ctl(const char *s)
{
    for (const char *p = s; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            return (long)(p - s);
    return -1;
}

#endif
