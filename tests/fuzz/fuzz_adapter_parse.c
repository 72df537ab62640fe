/* Fuzz target for the adapters' LM-output parsers (Chat sections, JSON repair,
 * literal_eval, value coercion): the first byte picks a signature and an adapter, the rest
 * is the completion. Every input must end in outputs or an adapter error, within bounds. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <dspyc/adapter.h>
#include <dspyc/signature.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const signatures[] = {
    "question -> answer",
    "question -> reasoning, answer: int",
    "q -> a: float, b: bool, c: list[str]",
    "q -> label: Literal['pos', 'neg', \"it's\"], score: Optional[float]",
    "q -> d: dict[str, list[int]], t: tuple[int, str], v: tuple[float, ...]",
    "q -> u: Union[int, str, None], x: Any, n: NoneType",
    "q -> m: dict[Literal['a', 'b'], Optional[bool]], l: list[Literal[1, 2, True]]",
    "q -> s: str | None, k: list[dict[str, Any]], e: list",
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct dspy_error err;
    dspy_signature *sig = NULL;
    json_t *out = NULL;
    size_t nsig = sizeof(signatures) / sizeof(signatures[0]);

    if (size < 1 || size > 65536)
        return 0;
    enum dspy_adapter_kind kind = (data[0] & 0x80) ? DSPY_ADAPTER_JSON : DSPY_ADAPTER_CHAT;
    if (dspy_signature_parse(signatures[data[0] % nsig], NULL, &sig, &err))
        abort();
    dspy_status rc = dspy_adapter_parse(kind, sig, (const char *)data + 1, size - 1, &out, &err);
    if (rc == DSPY_OK) {
        /* every output field is present */
        for (size_t i = dspy_signature_ninputs(sig); i < dspy_signature_nfields(sig); i++)
            if (!json_object_get(out, dspy_signature_field(sig, i)->name))
                abort();
        json_decref(out);
    } else if (rc != DSPY_EADAPTER || strlen(err.message) >= sizeof(err.message)) {
        abort();
    }
    dspy_signature_free(sig);
    return 0;
}
