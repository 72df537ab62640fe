/* Fuzz target for the string-signature parser: any bytes either parse into a signature
 * (whose type names, copy and prompt rendering must then work) or fail with a positioned
 * error; never a crash, leak or read past the input. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <dspyc/adapter.h>
#include <dspyc/signature.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct dspy_error err;
    dspy_signature *sig = NULL;
    json_t *msgs = NULL;
    char *text;

    if (size > 4096)
        return 0;
    /* An optional instruction text follows the first NUL byte. */
    text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    size_t head = strlen(text);
    const char *instructions = head < size ? text + head + 1 : NULL;
    dspy_status rc = dspy_signature_parse(text, instructions, &sig, &err);
    if (rc) {
        /* every parse error names a position inside the text */
        if (rc == DSPY_EPARSE && (err.offset < 0 || (size_t)err.offset > head))
            abort();
        if (!err.message[0] || (rc != DSPY_EPARSE && rc != DSPY_EUTF8))
            abort();
        free(text);
        return 0;
    }
    for (size_t i = 0; i < dspy_signature_nfields(sig); i++)
        dspy_free(dspy_type_name(dspy_signature_field(sig, i)->type));
    dspy_signature *copy = dspy_signature_copy(sig);
    if (copy && dspy_signature_find(copy, "reasoning") < 0)
        dspy_signature_prepend_output(copy, "reasoning", NULL);
    for (int kind = 0; kind < 2 && copy; kind++) {
        if (!dspy_adapter_format((enum dspy_adapter_kind)kind, copy, NULL, NULL, &msgs, &err))
            json_decref(msgs);
    }
    dspy_signature_free(copy);
    dspy_signature_free(sig);
    free(text);
    return 0;
}
