/* HTTP client engine, loop thread (net layer). libcurl is driven with
 * curl_multi_socket_action over our own epoll set rather than curl_multi_poll: poll()
 * rebuilds and scans every socket and curl_multi_perform walks every transfer on each
 * wake-up, O(in flight) per event, while socket_action touches only the sockets that are
 * ready, which is what 10,000 transfers on two cores need. This file holds the call state
 * machine (inbox -> limiter wait -> transfer -> retry timer -> finish) and the loop;
 * engine_xfer.c the libcurl side of a transfer. */
#define _GNU_SOURCE /* epoll_pwait2 */
#include <errno.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "net/engine_int.h"

#define MAX_EVENTS 512

static _Thread_local const struct dspy__engine *loop_engine;

bool dspy__engine_on_loop(const struct dspy__engine *e)
{
    return loop_engine == e;
}

static void finish(struct dspy__engine *e, struct dspy__engine_call *c, dspy_status st);
static void acquire_and_start(struct dspy__engine *e, struct dspy__engine_call *c);
static void call_timer_fire(struct dspy__engine *e, struct dspy__engine_timer *t);

/* ---- attempts ---- */

static void attempt_started(struct dspy__engine *e, struct dspy__engine_call *c, uint64_t now)
{
    c->state = DSPY__CALL_ACTIVE;
    c->res.attempts++;
    c->res.start_ns = now;
    DSPY__STAT_ADD(e, n_attempts, 1);
    DSPY__STAT_ADD(e, n_in_flight, 1);
    if (c->res.attempts > 1)
        DSPY__STAT_ADD(e, n_retries, 1);
}

static void begin_attempt(struct dspy__engine *e, struct dspy__engine_call *c)
{
    uint64_t now = dspy__now_ns();
    if (c->deadline_abs_ns && now >= c->deadline_abs_ns) {
        dspy__engine_set_error(c, "deadline passed before the request could be sent");
        finish(e, c, DSPY_ELM_TIMEOUT);
        return;
    }
    struct dspy__engine_slot *s = dspy__engine_slot_get(e);
    if (!s) {
        dspy__engine_set_error(c, "out of memory for a transfer");
        finish(e, c, DSPY_ENOMEM);
        return;
    }
    s->call = c;
    s->received = 0;
    s->max_bytes = c->max_response_bytes;
    s->http_status = 0;
    s->first_byte_ns = 0;
    s->write_rc = DSPY_OK;
    s->socket_errno = 0;
    s->streaming = false;
    s->retry_after_len = s->retry_after_ms_len = 0;
    dspy__buf_reset(&s->body);
    if (c->on_event) {
        dspy__sse_set_limit(&s->sse, c->max_event_bytes);
        dspy__sse_reset(&s->sse);
    }
    c->slot = s;
    s->own = c->own;
    if (c->own) {
        attempt_started(e, c, now);
        c->timer.fire = call_timer_fire; /* the attempt's timeouts */
        dspy__engine_h1_start(e, c, now);
        return;
    }
    if (dspy__engine_slot_easy(e, s)) {
        dspy__engine_set_error(c, "out of memory for a transfer");
        finish(e, c, DSPY_ENOMEM);
        return;
    }
    dspy__engine_setup_easy(c, s->easy, now);
    s->shard = dspy__engine_shard_get(e);
    if (!s->shard || curl_multi_add_handle(s->shard->multi, s->easy) != CURLM_OK) {
        if (s->shard)
            dspy__engine_shard_put(e, s->shard);
        s->shard = NULL;
        dspy__engine_set_error(c, "cannot start the transfer (out of memory)");
        finish(e, c, DSPY_ENOMEM);
        return;
    }
    attempt_started(e, c, now);
}

/* Stop the running transfer of `c` (finished, cancelled), giving back its permit. */
static void end_transfer(struct dspy__engine *e, struct dspy__engine_call *c)
{
    if (c->state == DSPY__CALL_ACTIVE) {
        struct dspy__engine_slot *s = c->slot;
        if (s->own) {
            dspy__engine_h1_stop(e, s);
        } else {
            curl_multi_remove_handle(s->shard->multi, s->easy);
            dspy__engine_shard_put(e, s->shard);
            s->shard = NULL;
        }
        DSPY__STAT_SUB(e, n_in_flight, 1);
    }
    if (c->holds_permit) {
        c->holds_permit = false;
        dspy__ratelimit_release(c->limiter->rl);
        /* Grant the next waiter from the timer pass, not from here: no recursion. */
        dspy__engine_timer_arm(&e->timers, &c->limiter->timer, 0);
    }
}

static bool cancelled(const struct dspy__engine *e, const struct dspy__engine_call *c)
{
    return atomic_load_explicit(&c->cancel_asked, memory_order_relaxed) ||
           atomic_load_explicit(&e->stopping, memory_order_relaxed) ||
           (c->group && atomic_load_explicit(&c->group->cancelled, memory_order_relaxed));
}

void dspy__engine_attempt_done(struct dspy__engine *e, struct dspy__engine_call *c, CURLcode cc)
{
    struct dspy__engine_slot *s = c->slot;
    end_transfer(e, c);
    c->state = DSPY__CALL_WAIT_RETRY; /* out of the multi handle */
    dspy_status st = dspy__engine_classify(c, cc);
    c->res.http_status = s->http_status;
    c->res.first_byte_ns = s->first_byte_ns;
    c->res.retry_after_ns = dspy__engine_retry_after(s);
    int outcome = st ? (int)st : (int)s->http_status;
    if (st == DSPY_OK && s->http_status >= 400)
        snprintf(c->error, sizeof(c->error), "HTTP %ld", s->http_status);
    if (st == DSPY_ECANCELED || cancelled(e, c) || !dspy__retry_is_retryable(outcome)) {
        finish(e, c, st);
        return;
    }
    uint64_t now = dspy__now_ns();
    int64_t delay = dspy__retry_next_delay(&c->retry, c->res.attempts, outcome,
                                           c->res.retry_after_ns, &e->rng);
    if (delay < 0 || (c->deadline_abs_ns && now + (uint64_t)delay >= c->deadline_abs_ns)) {
        finish(e, c, st);
        return;
    }
    c->slot = NULL;
    dspy__engine_slot_put(e, s);
    c->timer.fire = call_timer_fire;
    dspy__engine_timer_arm(&e->timers, &c->timer, now + (uint64_t)delay);
}

void dspy__engine_check_done(struct dspy__engine_shard *sh)
{
    struct dspy__engine *e = sh->e;
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(sh->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        char *priv = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &priv);
        struct dspy__engine_slot *s = (struct dspy__engine_slot *)(void *)priv;
        CURLcode cc = m->data.result;
        dspy__engine_attempt_done(e, s->call, cc);
    }
}

/* ---- the call state machine ---- */

static void unlink_call(struct dspy__engine *e, struct dspy__engine_call *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        e->live = c->next;
    if (c->next)
        c->next->prev = c->prev;
    e->nlive--;
    struct dspy__engine_group *g = c->group;
    if (!g)
        return;
    if (c->gprev)
        c->gprev->gnext = c->gnext;
    else if (g->members == c)
        g->members = c->gnext;
    if (c->gnext)
        c->gnext->gprev = c->gprev;
}

static void leave_limiter_queue(struct dspy__engine_call *c)
{
    if (!c->limiter)
        return;
    dspy__ratelimit_remove(c->limiter->rl, &c->waiter);
    if (c->admitted) {
        c->admitted = false;
        dspy__ratelimit_leave(c->limiter->rl);
    }
}

static void finish(struct dspy__engine *e, struct dspy__engine_call *c, dspy_status st)
{
    end_transfer(e, c);
    leave_limiter_queue(c);
    dspy__engine_timer_disarm(&e->timers, &c->timer);
    unlink_call(e, c);
    c->state = DSPY__CALL_DONE;
    struct dspy__engine_slot *s = c->slot;
    c->res.status = st;
    c->res.done_ns = dspy__now_ns();
    if (st == DSPY_OK && c->res.http_status < 400)
        c->error[0] = '\0';
    if (s) {
        c->res.body = s->body.ptr ? s->body.ptr : "";
        c->res.body_len = s->body.len;
    }
    /* Counted before the callback: one that submits the next request (a closed loop
     * under max_pending) must find the slot this call held already free. */
    DSPY__STAT_ADD(e, n_finished, 1);
    if (st)
        DSPY__STAT_ADD(e, n_failed, 1);
    DSPY__STAT_SUB(e, n_pending, 1);
    if (c->on_done)
        c->on_done(c, &c->res, c->userdata);
    if (s) {
        if (c->has_handle && s->body.len) {
            c->kept_body = dspy__buf_detach(&s->body, &c->res.body_len);
            c->res.body = c->kept_body;
        } else {
            c->res.body = "";
            c->res.body_len = 0;
        }
        c->slot = NULL;
        dspy__engine_slot_put(e, s);
    }
    if (c->owns_body)
        dspy_free((void *)c->body);
    c->body = NULL;
    if (c->group)
        dspy__engine_group_unref(c->group);
    c->group = NULL;
    atomic_store_explicit(&c->finished, true, memory_order_release);
    if (c->has_handle) {
        pthread_mutex_lock(&c->mu);
        c->done_seen = true;
        pthread_cond_broadcast(&c->cv);
        pthread_mutex_unlock(&c->mu);
    }
    dspy__engine_call_unref(c);
}

static void acquire_and_start(struct dspy__engine *e, struct dspy__engine_call *c)
{
    struct dspy__engine_limiter *l = c->limiter;
    if (!l) {
        begin_attempt(e, c);
        return;
    }
    uint64_t now = dspy__now_ns();
    if (!c->admitted) { /* a retry: already accepted, so never turned away */
        dspy__ratelimit_admit(l->rl, true);
        c->admitted = true;
    }
    if (dspy__ratelimit_try_acquire(l->rl, now, c->est_tokens)) {
        c->admitted = false;
        dspy__ratelimit_leave(l->rl);
        c->holds_permit = true;
        begin_attempt(e, c);
        return;
    }
    c->state = DSPY__CALL_WAIT_LIMIT;
    dspy__ratelimit_enqueue(l->rl, &c->waiter, now);
    DSPY__STAT_ADD(e, n_rl_waits, 1);
    if (c->deadline_abs_ns) {
        c->timer.fire = call_timer_fire;
        dspy__engine_timer_arm(&e->timers, &c->timer, c->deadline_abs_ns);
    }
    uint64_t next = dspy__ratelimit_next_ns(l->rl, now);
    if (next != UINT64_MAX)
        dspy__engine_timer_arm(&e->timers, &l->timer, next);
}

static void call_timer_fire(struct dspy__engine *e, struct dspy__engine_timer *t)
{
    struct dspy__engine_call *c = DSPY__CONTAINER_OF(t, struct dspy__engine_call, timer);
    if (c->state == DSPY__CALL_WAIT_RETRY) {
        acquire_and_start(e, c);
    } else if (c->state == DSPY__CALL_WAIT_LIMIT) {
        dspy__engine_set_error(c, "deadline passed waiting for the rate limiter");
        finish(e, c, DSPY_ELM_TIMEOUT);
    } else if (c->state == DSPY__CALL_ACTIVE && c->slot->own) {
        dspy__engine_h1_timeout(e, c);
    }
}

void dspy__engine_limiter_fire(struct dspy__engine *e, struct dspy__engine_timer *t)
{
    struct dspy__engine_limiter *l = DSPY__CONTAINER_OF(t, struct dspy__engine_limiter, timer);
    uint64_t now = dspy__now_ns();
    struct dspy__ratelimit_waiter *w;
    while ((w = dspy__ratelimit_grant(l->rl, now))) {
        struct dspy__engine_call *c = DSPY__CONTAINER_OF(w, struct dspy__engine_call, waiter);
        c->admitted = false;
        dspy__ratelimit_leave(l->rl);
        c->holds_permit = true;
        c->res.ratelimit_wait_ns += now - w->since_ns;
        dspy__engine_timer_disarm(&e->timers, &c->timer);
        begin_attempt(e, c);
    }
    uint64_t next = dspy__ratelimit_next_ns(l->rl, now);
    if (next != UINT64_MAX)
        dspy__engine_timer_arm(&e->timers, &l->timer, next);
}

static void start_call(struct dspy__engine *e, struct dspy__engine_call *c)
{
    c->next = e->live;
    c->prev = NULL;
    if (e->live)
        e->live->prev = c;
    e->live = c;
    e->nlive++;
    if (c->group) {
        c->gnext = c->group->members;
        c->gprev = NULL;
        if (c->gnext)
            c->gnext->gprev = c;
        c->group->members = c;
    }
    /* Every live call and limiter may hold one armed timer: room for all of them now means
     * arming never fails later. */
    if (dspy__engine_reserve_timers(e, 1)) {
        dspy__engine_set_error(c, "out of memory for a timer");
        finish(e, c, DSPY_ENOMEM);
        return;
    }
    if (cancelled(e, c)) {
        dspy__engine_set_error(c, "cancelled");
        finish(e, c, DSPY_ECANCELED);
        return;
    }
    acquire_and_start(e, c);
}

static void cancel_now(struct dspy__engine *e, struct dspy__engine_call *c)
{
    if (c->state == DSPY__CALL_DONE)
        return;
    dspy__engine_set_error(c, "cancelled");
    finish(e, c, DSPY_ECANCELED);
}

static void drain_inbox(struct dspy__engine *e)
{
    struct dspy__engine_msg *m = atomic_exchange_explicit(&e->inbox, NULL, memory_order_acquire);
    struct dspy__engine_msg *fifo = NULL;
    while (m) { /* the inbox is a stack: reverse it to keep submission order */
        struct dspy__engine_msg *next = m->next;
        m->next = fifo;
        fifo = m;
        m = next;
    }
    while (fifo) {
        m = fifo;
        fifo = m->next;
        if (m->kind == DSPY__MSG_SUBMIT) {
            start_call(e, DSPY__CONTAINER_OF(m, struct dspy__engine_call, submit_msg));
        } else if (m->kind == DSPY__MSG_CANCEL) {
            struct dspy__engine_call *c = DSPY__CONTAINER_OF(m, struct dspy__engine_call,
                                                             cancel_msg);
            cancel_now(e, c);
            dspy__engine_call_unref(c);
        } else if (m->kind == DSPY__MSG_RESOLVED) {
            dspy__engine_h1_resolved(e, DSPY__CONTAINER_OF(m, struct dspy__engine_lookup, msg));
        } else {
            struct dspy__engine_group *g = DSPY__CONTAINER_OF(m, struct dspy__engine_group,
                                                              cancel_msg);
            while (g->members)
                cancel_now(e, g->members);
            dspy__engine_group_unref(g);
        }
    }
}

/* ---- the loop ---- */

static void run_timers(struct dspy__engine *e)
{
    uint64_t now = dspy__now_ns();
    struct dspy__engine_timer *t;
    while ((t = dspy__engine_timers_pop_due(&e->timers, now)))
        t->fire(e, t);
}

/* How long the loop may sleep: -1 = until an event, else nanoseconds to the next timer. */
static int64_t wait_ns(struct dspy__engine *e)
{
    if (atomic_load_explicit(&e->inbox, memory_order_relaxed))
        return 0;
    uint64_t due = dspy__engine_timers_next(&e->timers);
    if (due == UINT64_MAX)
        return -1;
    uint64_t now = dspy__now_ns();
    return due <= now ? 0 : (int64_t)(due - now);
}

/* epoll_wait with a nanosecond timeout where the kernel has epoll_pwait2 (Linux 5.11): a
 * timer due in 0.2 ms is not slept to the next whole millisecond. Elsewhere the timeout is
 * rounded up to milliseconds, never down (an early wake-up would find nothing due). */
static int wait_events(struct dspy__engine *e, struct epoll_event *evs, int max)
{
    int64_t ns = wait_ns(e);
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 35))
    static atomic_bool no_pwait2;
    if (ns > 0 && !atomic_load_explicit(&no_pwait2, memory_order_relaxed)) {
        struct timespec ts = { (time_t)(ns / 1000000000), (long)(ns % 1000000000) };
        int n = epoll_pwait2(e->epfd, evs, max, &ts, NULL);
        if (n >= 0 || errno != ENOSYS)
            return n;
        atomic_store_explicit(&no_pwait2, true, memory_order_relaxed);
    }
#endif
    return epoll_wait(e->epfd, evs, max,
                      ns < 0 ? -1
                      : ns   ? (int)dspy__engine_ms_ceil((uint64_t)ns)
                             : 0);
}

static void handle_events(struct dspy__engine *e, const struct epoll_event *evs, int n)
{
    struct dspy__engine_shard *touched = NULL;
    bool many = false;
    for (int i = 0; i < n; i++) {
        uint64_t key = evs[i].data.u64;
        if (key & DSPY__H1_KEY) {
            dspy__engine_h1_event(e, (struct dspy__h1_conn *)(uintptr_t)(key & ~DSPY__H1_KEY),
                                  evs[i].events);
            continue;
        }
        if (key >> 32 == 0) {
            uint64_t v;
            if (read(e->evfd, &v, sizeof(v)) < 0) {
                /* EAGAIN: another wake-up already consumed it. */
            }
            continue;
        }
        struct dspy__engine_shard *sh = e->shards[(key >> 32) - 1];
        uint32_t ev = evs[i].events;
        int flags = ((ev & EPOLLIN) ? CURL_CSELECT_IN : 0) |
                    ((ev & EPOLLOUT) ? CURL_CSELECT_OUT : 0);
        if (ev & (EPOLLERR | EPOLLHUP))
            flags |= CURL_CSELECT_IN | CURL_CSELECT_OUT; /* let curl meet the error on I/O */
        int running;
        curl_multi_socket_action(sh->multi, (curl_socket_t)(uint32_t)key, flags, &running);
        if (touched && touched != sh)
            many = true;
        touched = sh;
    }
    if (many) {
        for (uint32_t i = 0; i < e->nshards; i++)
            dspy__engine_check_done(e->shards[i]);
    } else if (touched) {
        dspy__engine_check_done(touched);
    }
}

void *dspy__engine_loop_main(void *arg)
{
    struct dspy__engine *e = arg;
    struct epoll_event evs[MAX_EVENTS];
    loop_engine = e;
    /* Timers fire when due, not up to the default 50 us later. */
    prctl(PR_SET_TIMERSLACK, 1000UL, 0UL, 0UL, 0UL);
    for (;;) {
        drain_inbox(e);
        bool stopping = atomic_load(&e->stopping);
        if (stopping) {
            while (e->live)
                cancel_now(e, e->live);
            if (!atomic_load(&e->inbox))
                break;
            continue;
        }
        run_timers(e);
        dspy__engine_h1_reap(e);
        int n = wait_events(e, evs, MAX_EVENTS);
        if (n < 0 && errno != EINTR)
            break;
        if (n > 0)
            handle_events(e, evs, n);
    }
    loop_engine = NULL;
    return NULL;
}
