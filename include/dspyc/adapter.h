/* Adapters turn a signature, demos and inputs into chat messages and the LM's reply back
 * into output values, byte-identical to DSPy 3.x's ChatAdapter and JSONAdapter. */
#ifndef DSPYC_ADAPTER_H
#define DSPYC_ADAPTER_H

#include <jansson.h>

#include <dspyc/common.h>
#include <dspyc/signature.h>

#ifdef __cplusplus
extern "C" {
#endif

enum dspy_adapter_kind { DSPY_ADAPTER_CHAT, DSPY_ADAPTER_JSON };

/** "chat" / "json" (static storage); parse returns -1 for an unknown name. */
DSPY_EXTERN const char *dspy_adapter_name(enum dspy_adapter_kind kind);
DSPY_EXTERN int dspy_adapter_from_name(const char *name);

/** Render the messages DSPy sends: a JSON array of {"role", "content"} objects.
 * `demos` is a JSON array of objects (field name -> value) or NULL; `inputs` an object.
 * *messages is new (caller owns). Thread-safe on a shared signature. */
DSPY_EXTERN dspy_status dspy_adapter_format(enum dspy_adapter_kind kind, const dspy_signature *sig,
                                            const json_t *demos, const json_t *inputs,
                                            json_t **messages, struct dspy_error *err);

/** The `response_format` DSPy's JSONAdapter sends for this signature to a model without
 * response-schema support, JSON mode ({"type": "json_object"}), or NULL when it sends none
 * (always NULL for the Chat adapter). Caller owns the result. */
DSPY_EXTERN json_t *dspy_adapter_response_format(enum dspy_adapter_kind kind,
                                                 const dspy_signature *sig);

/** The JSON-schema `response_format` DSPy's JSONAdapter sends a model that supports
 * response schemas (dspy_lm_structured_outputs()): {"type": "json_schema", "json_schema":
 * {"name": "DSPyProgramOutputs", "schema": <the output fields' strict schema>, "strict":
 * true}}. NULL when an output field is an open-ended dict[K, V] (DSPy then sends JSON
 * mode, dspy_adapter_response_format()) or out of memory. Caller owns the result. */
DSPY_EXTERN json_t *dspy_adapter_schema_format(const dspy_signature *sig);

/** Parse one LM completion into an object of output values (caller owns) typed as the
 * signature says. On failure returns DSPY_EADAPTER with DSPy's error text in err->message. */
DSPY_EXTERN dspy_status dspy_adapter_parse(enum dspy_adapter_kind kind, const dspy_signature *sig,
                                           const char *text, size_t len, json_t **outputs,
                                           struct dspy_error *err);

#ifdef __cplusplus
}
#endif
#endif
