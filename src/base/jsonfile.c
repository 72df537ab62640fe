/* JSON files read strictly, with positioned errors (base layer). */
#include "base/jsonfile.h"
#include "base/status.h"

json_t *dspy__json_load_file(const char *path, struct dspy_error *err)
{
    json_error_t je;
    json_t *doc = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (doc)
        return doc;
    dspy__err(err, DSPY_EPARSE, "%s:%d:%d: %s", path, je.line, je.column, je.text);
    dspy__err_file(err, path);
    if (err) {
        err->line = je.line;
        err->column = je.column;
        err->offset = je.position;
    }
    return NULL;
}
