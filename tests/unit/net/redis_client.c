/* Unit tests for the bounded Redis connections against a hostile server on loopback (a TCP
 * server here that answers every command with the bytes a test chose): an array or bulk
 * header declaring more than the limits, arrays that together pass them, a reply's bytes
 * together past them, each a protocol error naming the size; replies within the limits,
 * pipelined ones included, read as hiredis reads them. threads: the hostile server's. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <dspyc/common.h>

#include "net/redis_client.h"
#include "unit/net/hostile_redis.h"

static const struct timeval SECOND = { 1, 0 }, FIVE_SECONDS = { 5, 0 };

/* One GET against a server answering `answer`: the reply, or NULL with *c's error. */
static redisReply *get_from(struct hostile_redis *h, const char *answer, size_t len,
                            const struct dspy__redis_limits *lim, redisContext **c)
{
    assert_true(hostile_redis_start(h, answer, len));
    *c = dspy__redis_connect("127.0.0.1", h->port, NULL, SECOND, FIVE_SECONDS, lim);
    assert_non_null(*c);
    assert_int_equal((*c)->err, 0);
    return dspy__redis_command(*c, "GET %s", "k");
}

static void refused(redisContext *c, redisReply *rep, const char *message)
{
    print_message("refused: %s\n", c->errstr);
    assert_null(rep);
    assert_int_equal(c->err, REDIS_ERR_PROTOCOL);
    assert_string_equal(c->errstr, message);
    /* and the context stays refused: nothing more is read from it */
    assert_null(dspy__redis_command(c, "PING"));
}

static void an_array_header_past_the_limit_is_refused(void **state)
{
    (void)state;
    static const char answer[] = "*857108864\r\n";
    struct hostile_redis h;
    redisContext *c;
    redisReply *rep = get_from(&h, answer, sizeof(answer) - 1, NULL, &c);
    refused(c, rep, "Redis reply too large: 857108864 elements (at most 1048576)");
    dspy__redis_free(c);
    hostile_redis_stop(&h);

    /* the standalone reader (what the fuzz target feeds) says the same */
    redisReader *r = dspy__redis_reader_new(NULL);
    void *reply = NULL;
    assert_non_null(r);
    assert_int_equal(redisReaderFeed(r, answer, sizeof(answer) - 1), REDIS_OK);
    assert_int_equal(dspy__redis_reader_get_reply(r, &reply), REDIS_ERR);
    assert_null(reply);
    assert_string_equal(r->errstr, "Redis reply too large: 857108864 elements (at most 1048576)");
    dspy__redis_reader_free(r);
}

static void a_bulk_header_past_the_limit_is_refused(void **state)
{
    (void)state;
    static const char answer[] = "$857108864\r\nabc";
    struct hostile_redis h;
    redisContext *c;
    redisReply *rep = get_from(&h, answer, sizeof(answer) - 1, NULL, &c);
    refused(c, rep, "Redis reply too large: a string of 857108864 bytes (at most 536870912)");
    dspy__redis_free(c);
    hostile_redis_stop(&h);
}

/* `n` integer elements ":1\r\n" after `head`, at `p`; the end. */
static char *ones(char *p, const char *head, size_t n)
{
    p += sprintf(p, "%s", head);
    for (size_t i = 0; i < n; i++)
        p += sprintf(p, ":1\r\n");
    return p;
}

/* Small arrays that declare much together: every level counts toward one limit. */
static void the_elements_of_every_level_count_together(void **state)
{
    (void)state;
    const struct dspy__redis_limits lim = { 1000, (size_t)1 << 20 };
    char *answer = malloc(16 * 1024);
    struct hostile_redis h;
    redisContext *c;
    assert_non_null(answer);
    /* 2 + 499 + 499 = 1000: at the limit, read whole */
    char *end = ones(answer, "*2\r\n*499\r\n", 499);
    end = ones(end, "*499\r\n", 499);
    redisReply *rep = get_from(&h, answer, (size_t)(end - answer), &lim, &c);
    assert_non_null(rep);
    assert_int_equal(rep->type, REDIS_REPLY_ARRAY);
    assert_int_equal(rep->elements, 2);
    assert_int_equal(rep->element[1]->elements, 499);
    assert_int_equal(rep->element[1]->element[498]->integer, 1);
    freeReplyObject(rep);
    /* the next reply starts its own count */
    rep = dspy__redis_command(c, "GET %s", "k");
    assert_non_null(rep);
    freeReplyObject(rep);
    dspy__redis_free(c);
    hostile_redis_stop(&h);

    /* 2 + 600 + 600 = 1202: the second header is refused before anything is made of it */
    end = ones(answer, "*2\r\n*600\r\n", 600);
    end += sprintf(end, "*600\r\n");
    rep = get_from(&h, answer, (size_t)(end - answer), &lim, &c);
    refused(c, rep, "Redis reply too large: 1202 elements (at most 1000)");
    dspy__redis_free(c);
    hostile_redis_stop(&h);
    free(answer);
}

/* Strings each within the limit that pass it together. */
static void the_bytes_of_a_reply_count_together(void **state)
{
    (void)state;
    const struct dspy__redis_limits lim = { 1000, 100000 };
    size_t cap = 200 * 1000;
    char *answer = malloc(cap);
    struct hostile_redis h;
    redisContext *c;
    assert_non_null(answer);
    char *end = answer + sprintf(answer, "*3\r\n");
    for (int i = 0; i < 3; i++) {
        end += sprintf(end, "$40000\r\n");
        memset(end, 'a' + i, 40000);
        end += 40000;
        end += sprintf(end, "\r\n");
    }
    redisReply *rep = get_from(&h, answer, (size_t)(end - answer), &lim, &c);
    refused(c, rep, "Redis reply too large: over 100000 bytes");
    dspy__redis_free(c);
    hostile_redis_stop(&h);

    /* three such strings as three replies (one command, three answers: a pipeline as the
     * reader sees it) are each within the limit */
    end = answer;
    for (int i = 0; i < 3; i++) {
        end += sprintf(end, "$40000\r\n");
        memset(end, 'a' + i, 40000);
        end += 40000;
        end += sprintf(end, "\r\n");
    }
    rep = get_from(&h, answer, (size_t)(end - answer), &lim, &c);
    for (int i = 0; i < 3; i++) {
        if (i)
            assert_int_equal(dspy__redis_get_reply(c, &rep), REDIS_OK);
        assert_non_null(rep);
        assert_int_equal(rep->type, REDIS_REPLY_STRING);
        assert_int_equal(rep->len, 40000);
        assert_int_equal(rep->str[39999], 'a' + i);
        freeReplyObject(rep);
    }
    dspy__redis_free(c);
    hostile_redis_stop(&h);
    free(answer);
}

/* What a plain Redis sends reads as before: nil, nested arrays, statuses, errors. */
static void replies_within_the_limits_read_as_before(void **state)
{
    (void)state;
    static const char answer[] = "*4\r\n$-1\r\n*-1\r\n*2\r\n+OK\r\n-ERR no\r\n:42\r\n";
    struct hostile_redis h;
    redisContext *c;
    redisReply *rep = get_from(&h, answer, sizeof(answer) - 1, NULL, &c);
    assert_non_null(rep);
    assert_int_equal(rep->type, REDIS_REPLY_ARRAY);
    assert_int_equal(rep->elements, 4);
    assert_int_equal(rep->element[0]->type, REDIS_REPLY_NIL);
    assert_int_equal(rep->element[1]->type, REDIS_REPLY_NIL);
    assert_int_equal(rep->element[2]->element[0]->type, REDIS_REPLY_STATUS);
    assert_string_equal(rep->element[2]->element[1]->str, "ERR no");
    assert_int_equal(rep->element[3]->integer, 42);
    freeReplyObject(rep);
    dspy__redis_free(c);
    hostile_redis_stop(&h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(an_array_header_past_the_limit_is_refused),
        cmocka_unit_test(a_bulk_header_past_the_limit_is_refused),
        cmocka_unit_test(the_elements_of_every_level_count_together),
        cmocka_unit_test(the_bytes_of_a_reply_count_together),
        cmocka_unit_test(replies_within_the_limits_read_as_before),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
