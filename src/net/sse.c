/* Incremental SSE scanner (net layer). A line that lies whole inside one read is parsed in
 * place; only a line split across reads is copied, and only an event whose data spans
 * several lines or reads is joined into the reusable data buffer. */
#include <string.h>

#include "net/sse.h"

static const char BOM[3] = { '\xEF', '\xBB', '\xBF' };

void dspy__sse_init(struct dspy__sse *s, size_t max_bytes, dspy__sse_event_fn on_event,
                    void *userdata)
{
    memset(s, 0, sizeof(*s));
    s->on_event = on_event;
    s->userdata = userdata;
    dspy__buf_init(&s->line, 0);
    dspy__buf_init(&s->data, 0);
    dspy__buf_init(&s->type, 0);
    dspy__buf_init(&s->id, 0);
    dspy__sse_set_limit(s, max_bytes);
    dspy__sse_reset(s);
}

void dspy__sse_set_limit(struct dspy__sse *s, size_t max_bytes)
{
    s->max_bytes = max_bytes ? max_bytes : DSPY__SSE_MAX_DEFAULT;
    s->line.max = s->data.max = s->type.max = s->id.max = s->max_bytes;
}

void dspy__sse_reset(struct dspy__sse *s)
{
    dspy__buf_reset(&s->line);
    dspy__buf_reset(&s->data);
    dspy__buf_reset(&s->type);
    dspy__buf_reset(&s->id);
    s->data_view.ptr = NULL;
    s->data_view.len = 0;
    s->data_len = 0;
    s->data_lines = 0;
    s->skip_lf = false;
    s->first_line = true;
    s->in_event = false;
    s->failed = DSPY_OK;
    s->retry_ms = -1;
    s->events = 0;
    s->comments = 0;
    s->saw_done = false;
}

void dspy__sse_release(struct dspy__sse *s)
{
    dspy__buf_release(&s->line);
    dspy__buf_release(&s->data);
    dspy__buf_release(&s->type);
    dspy__buf_release(&s->id);
}

static struct dspy__sse_view buf_view(const struct dspy_buf *b)
{
    struct dspy__sse_view v = { b->ptr ? b->ptr : "", b->len };
    return v;
}

/* Copy a data view that points into the caller's read before that memory goes away. */
static dspy_status keep_data_view(struct dspy__sse *s)
{
    if (!s->data_view.ptr)
        return DSPY_OK;
    dspy__buf_reset(&s->data);
    dspy_status rc = dspy__buf_add(&s->data, s->data_view.ptr, s->data_view.len);
    s->data_view.ptr = NULL;
    s->data_view.len = 0;
    return rc;
}

static dspy_status dispatch(struct dspy__sse *s, uint64_t recv_ns)
{
    s->in_event = false;
    if (s->data_lines == 0) {
        dspy__buf_reset(&s->type);
        return DSPY_OK;
    }
    struct dspy__sse_event ev;
    ev.data = s->data_view.ptr ? s->data_view : buf_view(&s->data);
    ev.type = s->type.len ? buf_view(&s->type) : (struct dspy__sse_view){ "message", 7 };
    ev.id = buf_view(&s->id);
    ev.recv_ns = recv_ns;
    ev.done = ev.data.len == 6 && memcmp(ev.data.ptr, "[DONE]", 6) == 0;
    s->events++;
    if (ev.done)
        s->saw_done = true;
    int stop = s->on_event ? s->on_event(s->userdata, &ev) : 0;
    s->data_view.ptr = NULL;
    s->data_view.len = 0;
    s->data_len = 0;
    s->data_lines = 0;
    dspy__buf_reset(&s->data);
    dspy__buf_reset(&s->type);
    return stop ? DSPY_ECANCELED : DSPY_OK;
}

/* `in_read`: the value lies inside the caller's current read, so a lone data line can be
 * handed out as a view without copying. */
static dspy_status add_data(struct dspy__sse *s, const char *v, size_t n, bool in_read)
{
    size_t joined = s->data_lines ? s->data_len + 1 + n : n;
    if (joined > s->max_bytes)
        return DSPY_ETOOBIG;
    dspy_status rc = DSPY_OK;
    if (s->data_lines == 0 && in_read) {
        s->data_view.ptr = v;
        s->data_view.len = n;
    } else {
        if (s->data_lines == 0)
            dspy__buf_reset(&s->data);
        rc = keep_data_view(s);
        if (!rc && s->data_lines)
            rc = dspy__buf_addc(&s->data, '\n');
        if (!rc)
            rc = dspy__buf_add(&s->data, v, n);
    }
    if (rc)
        return rc;
    s->data_len = joined;
    s->data_lines++;
    return DSPY_OK;
}

static void set_retry(struct dspy__sse *s, const char *v, size_t n)
{
    if (n == 0 || n > 15)
        return;
    long ms = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return;
        ms = ms * 10 + (v[i] - '0');
    }
    s->retry_ms = ms;
}

static dspy_status field_line(struct dspy__sse *s, const char *lp, size_t ll, bool in_read)
{
    const char *colon = memchr(lp, ':', ll);
    size_t flen = colon ? (size_t)(colon - lp) : ll;
    const char *v = colon ? colon + 1 : lp + ll;
    size_t n = colon ? ll - flen - 1 : 0;
    if (n && *v == ' ') {
        v++;
        n--;
    }
    s->in_event = true;
    if (flen == 4 && memcmp(lp, "data", 4) == 0)
        return add_data(s, v, n, in_read);
    if (flen == 5 && memcmp(lp, "event", 5) == 0) {
        dspy__buf_reset(&s->type);
        return dspy__buf_add(&s->type, v, n);
    }
    if (flen == 2 && memcmp(lp, "id", 2) == 0) {
        if (memchr(v, '\0', n))
            return DSPY_OK;
        dspy__buf_reset(&s->id);
        return dspy__buf_add(&s->id, v, n);
    }
    if (flen == 5 && memcmp(lp, "retry", 5) == 0)
        set_retry(s, v, n);
    return DSPY_OK;
}

static dspy_status process_line(struct dspy__sse *s, const char *lp, size_t ll, bool in_read,
                                uint64_t recv_ns)
{
    if (s->first_line) {
        s->first_line = false;
        if (ll >= 3 && memcmp(lp, BOM, 3) == 0) {
            lp += 3;
            ll -= 3;
        }
    }
    if (ll == 0)
        return dispatch(s, recv_ns);
    if (lp[0] == ':') {
        s->comments++;
        return DSPY_OK;
    }
    return field_line(s, lp, ll, in_read);
}

/* Scanning state for one read: the next LF is searched once and remembered, so a run of
 * CR-terminated lines costs O(n), not O(n^2). */
struct eol_scan {
    const char *lf; /* next LF at or after the cursor, when known */
    bool no_lf;     /* no LF in the rest of the read */
};

static const char *find_eol(struct eol_scan *sc, const char *p, const char *end)
{
    if (!sc->no_lf && (!sc->lf || sc->lf < p)) {
        sc->lf = memchr(p, '\n', (size_t)(end - p));
        sc->no_lf = sc->lf == NULL;
    }
    const char *lim = sc->no_lf ? end : sc->lf;
    const char *cr = memchr(p, '\r', (size_t)(lim - p));
    return cr ? cr : (sc->no_lf ? NULL : sc->lf);
}

static dspy_status scan(struct dspy__sse *s, const char *p, const char *end, uint64_t recv_ns)
{
    struct eol_scan sc = { NULL, false };
    while (p < end) {
        const char *eol = find_eol(&sc, p, end);
        size_t n = (size_t)((eol ? eol : end) - p);
        if (s->line.len + n > s->max_bytes)
            return DSPY_ETOOBIG;
        if (!eol)
            return dspy__buf_add(&s->line, p, n);
        const char *next = eol + 1;
        if (*eol == '\r') {
            if (next < end) {
                if (*next == '\n')
                    next++;
            } else {
                s->skip_lf = true;
            }
        }
        dspy_status rc;
        if (s->line.len) {
            rc = dspy__buf_add(&s->line, p, n);
            if (!rc)
                rc = process_line(s, s->line.ptr, s->line.len, false, recv_ns);
            dspy__buf_reset(&s->line);
        } else {
            rc = process_line(s, p, n, true, recv_ns);
        }
        if (rc)
            return rc;
        p = next;
    }
    return DSPY_OK;
}

dspy_status dspy__sse_feed(struct dspy__sse *s, const char *data, size_t len, uint64_t recv_ns)
{
    if (s->failed)
        return s->failed;
    if (len == 0)
        return DSPY_OK;
    const char *p = data;
    if (s->skip_lf) {
        s->skip_lf = false;
        if (*p == '\n')
            p++;
    }
    dspy_status rc = scan(s, p, data + len, recv_ns);
    dspy_status keep = keep_data_view(s);
    if (!rc)
        rc = keep;
    if (rc)
        s->failed = rc;
    return rc;
}

bool dspy__sse_finish(const struct dspy__sse *s)
{
    return !s->failed && s->line.len == 0 && !s->in_event;
}
