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

#endif
