/* Fuzz target for the URL credentials masker: any bytes in, a NUL-terminated result within
 * the buffer out; a password is always masked, and masking is idempotent. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <dspyc/common.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char url[4096], out[256];
    if (size >= sizeof(url))
        return 0;
    memcpy(url, data, size);
    url[size] = '\0';
    size_t n = dspy_url_redact(url, out, (size_t)(data[0 % (size ? size : 1)] % 255) + 1);
    if (n >= sizeof(out) || out[n] != '\0' || strlen(out) != n)
        abort();
    /* With "user:password@" in the authority, the whole result keeps the user, masks the
     * password as "***", and masking it again changes nothing. */
    const char *sch = strstr(url, "://");
    const char *host = sch ? sch + 3 : url;
    size_t auth = strcspn(host, "/?#");
    const char *at = NULL;
    for (const char *p = host; p < host + auth; p++)
        if (*p == '@')
            at = p;
    if (at && memchr(host, ':', (size_t)(at - host)) && size + 4 < sizeof(out)) {
        char again[256];
        n = dspy_url_redact(url, out, sizeof(out));
        if (!strstr(out, ":***@") || n > size + 3)
            abort();
        dspy_url_redact(out, again, sizeof(again));
        if (strcmp(out, again))
            abort();
    }
    return 0;
}
