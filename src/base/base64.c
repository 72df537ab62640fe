/* Base64 decoding (base layer): the cache's import files and the BPE rank files. */
#include "base/base64.h"

#include <stdint.h>

static int value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    return c == '+' ? 62 : c == '/' ? 63 : -1;
}

bool dspy__base64_decode(const char *s, size_t n, unsigned char *out, size_t *len)
{
    unsigned char *o = out;
    if (n % 4)
        return false;
    for (size_t i = 0; i < n; i += 4) {
        const unsigned char *q = (const unsigned char *)s + i;
        bool pad2 = q[2] == '=', pad3 = q[3] == '=';
        int a = value(q[0]), b = value(q[1]);
        int c = pad2 ? 0 : value(q[2]), d = pad3 ? 0 : value(q[3]);
        if (a < 0 || b < 0 || c < 0 || d < 0 || (pad2 && !pad3) || ((pad2 || pad3) && i + 4 != n))
            return false;
        uint32_t v = (uint32_t)a << 18 | (uint32_t)b << 12 | (uint32_t)c << 6 | (uint32_t)d;
        *o++ = (unsigned char)(v >> 16);
        if (!pad2)
            *o++ = (unsigned char)(v >> 8);
        if (!pad3)
            *o++ = (unsigned char)v;
    }
    *len = (size_t)(o - out);
    return true;
}
