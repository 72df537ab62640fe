/* Python identifier characters (base layer): what str.isidentifier() accepts, from the
 * generated tables in unicode_ident.c. */
#ifndef DSPY_BASE_UNICODE_IDENT_H
#define DSPY_BASE_UNICODE_IDENT_H

#include <stdbool.h>
#include <stdint.h>

/* Whether `cp` may start a Python identifier (XID_Start or '_'). */
bool dspy__py_ident_start(uint32_t cp);

/* Whether `cp` may follow the first character of a Python identifier (XID_Continue). */
bool dspy__py_ident_continue(uint32_t cp);

/* Whether an identifier character is changed by NFKC normalization (alone or after a
 * letter: "ﬁ" becomes "fi", a combining accent merges), so that Python would read a name
 * holding it as another name. */
bool dspy__py_ident_nfkc_changes(uint32_t cp);

#endif
