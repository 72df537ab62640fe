/* Test helper: a hostile Redis, a loopback TCP server on its own thread that answers every
 * command it reads with the same bytes the test chose (an array header declaring 857108864
 * elements, say). It stands for a broken or malicious server, not for Redis: it speaks only
 * what the test gives it. Header-only, for tests. threads: the server's. */
#ifndef DSPY_TESTS_HOSTILE_REDIS_H
#define DSPY_TESTS_HOSTILE_REDIS_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define HOSTILE_CLIENTS 16

struct hostile_redis {
    const char *answer; /* borrowed until hostile_redis_stop */
    size_t answer_len;
    int port;
    char url[64];
    int listen_fd, wake[2];
    pthread_t thread;
};

static bool hostile_send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
        if (k <= 0)
            return false;
        p += k;
        n -= (size_t)k;
    }
    return true;
}

static void *hostile_redis_main(void *arg)
{
    struct hostile_redis *h = arg;
    struct pollfd fds[2 + HOSTILE_CLIENTS];
    nfds_t n = 2;
    char buf[65536];
    fds[0] = (struct pollfd){ .fd = h->wake[0], .events = POLLIN };
    fds[1] = (struct pollfd){ .fd = h->listen_fd, .events = POLLIN };
    while (poll(fds, n, -1) >= 0 && !fds[0].revents) {
        if (fds[1].revents) {
            int c = accept(h->listen_fd, NULL, NULL);
            if (c >= 0 && n < 2 + HOSTILE_CLIENTS) {
                struct timeval tv = { 5, 0 }; /* a client that stops reading is let go */
                setsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
                fds[n++] = (struct pollfd){ .fd = c, .events = POLLIN };
            } else if (c >= 0) {
                close(c);
            }
        }
        for (nfds_t i = 2; i < n; i++) {
            if (!fds[i].revents)
                continue;
            ssize_t k = recv(fds[i].fd, buf, sizeof(buf), 0);
            if (k > 0 && hostile_send_all(fds[i].fd, h->answer, h->answer_len))
                continue;
            close(fds[i].fd);
            fds[i--] = fds[--n];
        }
    }
    for (nfds_t i = 2; i < n; i++)
        close(fds[i].fd);
    return NULL;
}

/* Listen on a loopback port the kernel picks (kept open: no race for it) and serve. */
static bool hostile_redis_start(struct hostile_redis *h, const char *answer, size_t len)
{
    struct sockaddr_in a;
    socklen_t alen = sizeof(a);
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    h->answer = answer;
    h->answer_len = len;
    h->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    if (h->listen_fd < 0 || bind(h->listen_fd, (struct sockaddr *)&a, sizeof(a)) ||
        listen(h->listen_fd, 16) || getsockname(h->listen_fd, (struct sockaddr *)&a, &alen) ||
        pipe(h->wake))
        return false;
    h->port = ntohs(a.sin_port);
    snprintf(h->url, sizeof(h->url), "redis://127.0.0.1:%d", h->port);
    return pthread_create(&h->thread, NULL, hostile_redis_main, h) == 0;
}

static void hostile_redis_stop(struct hostile_redis *h)
{
    (void)!write(h->wake[1], "x", 1);
    pthread_join(h->thread, NULL);
    close(h->wake[0]);
    close(h->wake[1]);
    close(h->listen_fd);
}

#endif
