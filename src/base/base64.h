/* Base64 decoding, RFC 4648 with padding (base layer); encoding is dspy__buf_add_base64. */
#ifndef DSPY_BASE_BASE64_H
#define DSPY_BASE_BASE64_H

#include <stdbool.h>
#include <stddef.h>

/* Decode s[0..n) into out (room for n / 4 * 3 bytes), writing *len bytes. False, with out
 * undefined, when n is not a multiple of 4, a character is outside the alphabet, or the
 * padding is misplaced. */
bool dspy__base64_decode(const char *s, size_t n, unsigned char *out, size_t *len);

#endif
