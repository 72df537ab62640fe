/* `dspyc loadtest --html` (apps layer): writes the report JSON into the HTML template that
 * the build embeds from web/loadtest.html, giving one self-contained file that works offline. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "loadtest.h"

extern const char dspy_web_loadtest_html[];
extern const size_t dspy_web_loadtest_html_len;

static const char marker[] = "/*__DSPYC_DATA__*/null";

int lt_write_html(const char *path, json_t *report)
{
    const char *tmpl = dspy_web_loadtest_html;
    const char *at = strstr(tmpl, marker);
    char *data = json_dumps(report, JSON_COMPACT);
    FILE *f = fopen(path, "w");
    int rc = -1;
    if (!at || !data || !f) {
        fprintf(stderr, "dspyc loadtest: cannot write %s: %s\n", path,
                !f ? strerror(errno) : "bad template");
        goto out;
    }
    fwrite(tmpl, 1, (size_t)(at - tmpl), f);
    /* "</" inside a script would end it: JSON allows "<\/" for the same text. */
    for (const char *p = data; *p; p++) {
        if (p[0] == '<' && p[1] == '/')
            fputs("<\\", f);
        else
            fputc(*p, f);
    }
    const char *rest = at + sizeof(marker) - 1;
    fwrite(rest, 1, dspy_web_loadtest_html_len - (size_t)(rest - tmpl), f);
    rc = ferror(f) ? -1 : 0;
out:
    if (f && fclose(f))
        rc = -1;
    free(data);
    return rc;
}
