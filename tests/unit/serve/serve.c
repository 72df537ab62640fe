/* Unit tests for the server's pieces that need no network: the token file (format, errors
 * that never show a secret, the bearer check), the config file's routing by model name and
 * aliases with fallbacks, the body cache controls, and the SSE replay of a stored answer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <dspyc/serve.h>

#include "base/buf.h"
#include "serve/serve_int.h"

static char *write_temp(const char *text)
{
    static char path[64];
    snprintf(path, sizeof(path), "/tmp/dspyc-serve-unit-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

static void token_file(void **state)
{
    (void)state;
    struct dspy__serve_auth a = { NULL, 0 };
    struct dspy_error err;
    char *path = write_temp("# comment\n\ntok-a namespace=team-a\n  tok-b  \nadm admin\n");
    assert_int_equal(dspy__serve_auth_load(&a, path, &err), DSPY_OK);
    assert_int_equal(a.ntokens, 3);
    const struct dspy__serve_token *t = dspy__serve_auth_check(&a, "tok-a");
    assert_non_null(t);
    assert_string_equal(t->ns, "team-a");
    assert_false(t->admin);
    assert_null(dspy__serve_auth_check(&a, "tok-"));
    assert_null(dspy__serve_auth_check(&a, "tok-aa"));
    assert_null(dspy__serve_auth_check(&a, ""));
    assert_null(dspy__serve_auth_check(&a, NULL));
    assert_null(dspy__serve_auth_check(&a, "tok-b")->ns);
    assert_true(dspy__serve_auth_check(&a, "adm")->admin);
    dspy__serve_auth_release(&a);
    unlink(path);

    path = write_temp("ok-token\nsecret-xyz namespace=a whatever\n");
    assert_int_equal(dspy__serve_auth_load(&a, path, &err), DSPY_EPARSE);
    assert_int_equal(err.line, 2);
    assert_null(strstr(err.message, "secret-xyz"));
    assert_int_equal(a.ntokens, 0);
    unlink(path);
    path = write_temp("# only a comment\n");
    assert_int_equal(dspy__serve_auth_load(&a, path, &err), DSPY_EPARSE);
    assert_non_null(strstr(err.message, "no token"));
    unlink(path);
    assert_int_equal(dspy__serve_auth_load(&a, "/nonexistent/tokens", &err), DSPY_EIO);
}

static void routing_by_model(void **state)
{
    (void)state;
    char *path = write_temp(
        "{\"upstreams\": ["
        "{\"name\": \"a\", \"base_url\": \"http://127.0.0.1:1/v1\", \"models\": [\"m1\"],"
        " \"aliases\": {\"fast\": \"m1-2025\"}, \"fallbacks\": [\"any\"]},"
        "{\"name\": \"any\", \"base_url\": \"http://127.0.0.1:2/v1\","
        " \"aliases\": {\"fast\": \"local-fast\"}},"
        "{\"name\": \"c\", \"base_url\": \"http://127.0.0.1:3/v1\"}]}");
    struct dspy_serve_options o = DSPY_SERVE_OPTIONS_INIT;
    struct dspy_error err;
    dspy_server *s = NULL;
    o.config_path = path;
    assert_int_equal(dspy_serve_new(&o, &s, &err), DSPY_OK);
    const char *as = NULL;
    assert_int_equal(dspy__serve_route_model(s, "m1", &as), 0);
    assert_string_equal(as, "m1");
    assert_int_equal(dspy__serve_route_model(s, "fast", &as), 0);
    assert_string_equal(as, "m1-2025");
    assert_int_equal(s->ups[0].fallbacks[0], 1);
    assert_string_equal(dspy__serve_upstream_model(&s->ups[1], "fast"), "local-fast");
    /* no upstream names it: the first catch-all ("c"; "any" has aliases, so it is not one) */
    assert_int_equal(dspy__serve_route_model(s, "other", &as), 2);
    assert_true(s->list_models);
    dspy_serve_free(s);
    unlink(path);

    path = write_temp("{\"upstreams\": [{\"name\": \"a\", \"base_url\": \"http://x/v1\","
                      " \"fallbacks\": [\"b\"]}]}");
    o.config_path = path;
    assert_int_equal(dspy_serve_new(&o, &s, &err), DSPY_EPARSE);
    assert_null(s);
    assert_non_null(strstr(err.message, "'b' names no other upstream"));
    unlink(path);
    o.config_path = NULL;
    assert_int_equal(dspy_serve_new(&o, &s, &err), DSPY_EINVAL); /* no upstream at all */
}

static void body_controls(void **state)
{
    (void)state;
    struct dspy_cache_ctl ctl = DSPY_CACHE_CTL_INIT;
    double smax;
    const char *ns, *why = NULL;
    json_t *b = json_loads("{\"cache\": {\"no-cache\": true, \"ttl\": 30, \"s-maxage\": 5,"
                           " \"namespace\": \"t\"}}",
                           0, NULL);
    assert_true(dspy__serve_body_controls(b, &ctl, &smax, &ns, &why));
    assert_true(ctl.no_cache);
    assert_false(ctl.no_store);
    assert_true(ctl.ttl_s == 30 && smax == 5);
    assert_string_equal(ns, "t");
    json_decref(b);
    b = json_loads("{\"cache\": {\"use-cache\": false}}", 0, NULL);
    ctl = (struct dspy_cache_ctl)DSPY_CACHE_CTL_INIT;
    assert_true(dspy__serve_body_controls(b, &ctl, &smax, &ns, &why));
    assert_true(ctl.no_cache && ctl.no_store);
    json_decref(b);
    const char *bad[] = { "{\"cache\": 1}", "{\"cache\": {\"ttl\": 0}}",
                          "{\"cache\": {\"namespace\": 3}}", "{\"cache\": {\"nocache\": true}}" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        b = json_loads(bad[i], 0, NULL);
        why = NULL;
        assert_false(dspy__serve_body_controls(b, &ctl, &smax, &ns, &why));
        assert_non_null(why);
        json_decref(b);
    }
}

static void replay(void **state)
{
    (void)state;
    static const char body[] =
        "{\"id\":\"x\",\"created\":7,\"model\":\"m\",\"choices\":["
        "{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"hello\"},"
        "\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2,"
        "\"total_tokens\":3}}";
    struct dspy_buf b;
    dspy__buf_init(&b, 1 << 20);
    assert_int_equal(dspy__serve_replay_sse(body, sizeof(body) - 1, true, &b), DSPY_OK);
    assert_non_null(strstr(b.ptr, "\"delta\":{\"role\":\"assistant\",\"content\":\"hello\"}"));
    assert_non_null(strstr(b.ptr, "\"finish_reason\":\"stop\""));
    assert_non_null(strstr(b.ptr, "\"choices\":[],\"usage\":{"));
    assert_non_null(strstr(b.ptr, "\"created\":7"));
    assert_int_equal(strcmp(b.ptr + b.len - 14, "data: [DONE]\n\n"), 0);
    dspy__buf_reset(&b);
    assert_int_equal(dspy__serve_replay_sse(body, sizeof(body) - 1, false, &b), DSPY_OK);
    assert_null(strstr(b.ptr, "\"usage\""));
    dspy__buf_reset(&b);
    assert_int_equal(dspy__serve_replay_sse("{\"choices\":3}", 13, false, &b), DSPY_EPARSE);
    dspy__buf_release(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(token_file),
        cmocka_unit_test(routing_by_model),
        cmocka_unit_test(body_controls),
        cmocka_unit_test(replay),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
