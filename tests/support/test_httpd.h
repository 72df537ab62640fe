/* A tiny HTTP server for unit tests (libmicrohttpd on 127.0.0.1, a free port): answers
 * every request with a set status and body after an optional delay, and records what it
 * saw (path, Authorization header, body, request and connection counts). Header-only. */
#ifndef DSPY_TEST_HTTPD_H
#define DSPY_TEST_HTTPD_H

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <microhttpd.h>

struct test_httpd {
    struct MHD_Daemon *daemon;
    int port;
    pthread_mutex_t lock; /* guards everything below */
    int status;           /* what to answer */
    const char *body;
    int delay_ms;
    char path[256]; /* what the last request carried */
    char auth[512];
    char seen[65536];
    size_t seen_len;
    int requests;
    int connections; /* opened since start */
};

struct test_httpd_upload {
    size_t len;
};

static void test_httpd_notify(void *cls, struct MHD_Connection *c, void **socket_context,
                              enum MHD_ConnectionNotificationCode code)
{
    struct test_httpd *s = cls;
    (void)c;
    (void)socket_context;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        pthread_mutex_lock(&s->lock);
        s->connections++;
        pthread_mutex_unlock(&s->lock);
    }
}

static enum MHD_Result test_httpd_handle(void *cls, struct MHD_Connection *c, const char *url,
                                         const char *method, const char *version,
                                         const char *upload, size_t *upload_size, void **ctx)
{
    struct test_httpd *s = cls;
    (void)method;
    (void)version;
    if (!*ctx) { /* first call for this request: headers only */
        static struct test_httpd_upload marker;
        *ctx = &marker;
        pthread_mutex_lock(&s->lock);
        s->seen_len = 0;
        snprintf(s->path, sizeof(s->path), "%s", url);
        const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
        snprintf(s->auth, sizeof(s->auth), "%s", auth ? auth : "");
        pthread_mutex_unlock(&s->lock);
        return MHD_YES;
    }
    if (*upload_size) {
        pthread_mutex_lock(&s->lock);
        size_t n = *upload_size;
        if (n > sizeof(s->seen) - 1 - s->seen_len)
            n = sizeof(s->seen) - 1 - s->seen_len;
        memcpy(s->seen + s->seen_len, upload, n);
        s->seen_len += n;
        s->seen[s->seen_len] = '\0';
        pthread_mutex_unlock(&s->lock);
        *upload_size = 0;
        return MHD_YES;
    }
    pthread_mutex_lock(&s->lock);
    s->requests++;
    int status = s->status, delay = s->delay_ms;
    const char *body = s->body ? s->body : "";
    pthread_mutex_unlock(&s->lock);
    if (delay > 0) {
        struct timespec ts = { delay / 1000, (long)(delay % 1000) * 1000000L };
        nanosleep(&ts, NULL);
    }
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(body), (void *)(size_t)body,
                                                             MHD_RESPMEM_MUST_COPY);
    MHD_add_response_header(r, "Content-Type", "application/json");
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
}

/* Start on a free loopback port; 0 on success. */
static inline int test_httpd_start(struct test_httpd *s, int status, const char *body)
{
    memset(s, 0, sizeof(*s));
    pthread_mutex_init(&s->lock, NULL);
    s->status = status;
    s->body = body;
    s->daemon = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                                     MHD_USE_ERROR_LOG,
                                 0, NULL, NULL, test_httpd_handle, s, MHD_OPTION_NOTIFY_CONNECTION,
                                 test_httpd_notify, s, MHD_OPTION_END);
    if (!s->daemon)
        return -1;
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    s->port = info ? info->port : 0;
    return s->port ? 0 : -1;
}

static inline void test_httpd_set(struct test_httpd *s, int status, const char *body, int delay_ms)
{
    pthread_mutex_lock(&s->lock);
    s->status = status;
    s->body = body;
    s->delay_ms = delay_ms;
    pthread_mutex_unlock(&s->lock);
}

static inline void test_httpd_stop(struct test_httpd *s)
{
    if (s->daemon)
        MHD_stop_daemon(s->daemon);
    pthread_mutex_destroy(&s->lock);
}

#endif
