/* A trivial loopback HTTP/1.1 server for load-generator benchmarks (bench): epoll, one
 * thread per --threads, keep-alive, answers every request with a fixed 200 "ok", or with
 * --sse N a chunked OpenAI-style event stream of N token events, usage and [DONE], written
 * at once so the client's parsing, not the server's pacing, sets the rate. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

static int listen_fd;
static char *reply;
static size_t reply_len;

struct cstate {
    int fd;
    unsigned match; /* bytes of "\r\n\r\n" matched so far */
};

static void build_reply(int sse_events)
{
    if (!sse_events) {
        reply = strdup("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
                       "Content-Type: text/plain\r\n\r\nok");
        reply_len = strlen(reply);
        return;
    }
    size_t cap = (size_t)sse_events * 256 + 1024, len = 0;
    reply = malloc(cap);
    len += (size_t)sprintf(reply, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                                  "Transfer-Encoding: chunked\r\n\r\n");
    char ev[256];
    for (int i = 0; i <= sse_events + 1; i++) {
        int n;
        if (i < sse_events)
            n = snprintf(ev, sizeof(ev),
                         "data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\","
                         "\"choices\":[{\"index\":0,\"delta\":{\"content\":\" tok\"},"
                         "\"finish_reason\":null}],\"usage\":null}\n\n");
        else if (i == sse_events)
            n = snprintf(ev, sizeof(ev),
                         "data: {\"id\":\"x\",\"choices\":[],\"usage\":"
                         "{\"prompt_tokens\":8,\"completion_tokens\":%d}}\n\n",
                         sse_events);
        else
            n = snprintf(ev, sizeof(ev), "data: [DONE]\n\n");
        len += (size_t)sprintf(reply + len, "%x\r\n%s\r\n", n, ev);
    }
    len += (size_t)sprintf(reply + len, "0\r\n\r\n");
    reply_len = len;
}

static void serve(int ep, struct cstate *c)
{
    char buf[16384];
    for (;;) {
        ssize_t n = read(c->fd, buf, sizeof(buf));
        if (n < 0 && errno == EAGAIN)
            return;
        if (n <= 0) {
            close(c->fd);
            free(c);
            return;
        }
        static const char end[] = "\r\n\r\n";
        for (ssize_t i = 0; i < n; i++) {
            c->match = buf[i] == end[c->match] ? c->match + 1 : (buf[i] == '\r' ? 1 : 0);
            if (c->match == 4) {
                c->match = 0;
                size_t off = 0;
                while (off < reply_len) {
                    ssize_t w = write(c->fd, reply + off, reply_len - off);
                    if (w < 0 && errno == EAGAIN)
                        continue; /* benchmark server: a short spin is fine */
                    if (w <= 0)
                        break;
                    off += (size_t)w;
                }
            }
        }
    }
    (void)ep;
}

static void *loop(void *arg)
{
    (void)arg;
    int ep = epoll_create1(0);
    struct epoll_event ev = { .events = EPOLLIN | EPOLLEXCLUSIVE, .data.ptr = NULL };
    epoll_ctl(ep, EPOLL_CTL_ADD, listen_fd, &ev);
    struct epoll_event evs[128];
    for (;;) {
        int n = epoll_wait(ep, evs, 128, -1);
        for (int i = 0; i < n; i++) {
            if (!evs[i].data.ptr) {
                int fd;
                while ((fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    int one = 1;
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                    struct cstate *c = calloc(1, sizeof(*c));
                    c->fd = fd;
                    struct epoll_event ce = { .events = EPOLLIN | EPOLLET, .data.ptr = c };
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ce);
                }
                continue;
            }
            serve(ep, evs[i].data.ptr);
        }
    }
    return NULL;
}

int main(int argc, char **argv)
{
    int port = 0, threads = 1, sse = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--port"))
            port = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--threads"))
            threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--sse"))
            sse = atoi(argv[i + 1]);
    }
    signal(SIGPIPE, SIG_IGN);
    build_reply(sse);
    listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof(a);
    if (bind(listen_fd, (struct sockaddr *)&a, sizeof(a)) || listen(listen_fd, 4096) ||
        getsockname(listen_fd, (struct sockaddr *)&a, &alen)) {
        perror("http_hello");
        return 1;
    }
    printf("listening on http://127.0.0.1:%d/\n", ntohs(a.sin_port));
    fflush(stdout);
    pthread_t t;
    for (int i = 1; i < threads; i++)
        pthread_create(&t, NULL, loop, NULL);
    loop(NULL);
    return 0;
}
