/* POSIX regular expressions for the agent's readiness conditions (--wait-log).
 *
 * regex_t differs in size and layout between glibc and musl, and REG_* are macros whose
 * types differ; the shim owns the struct on the heap so Swift sees only a pointer.
 */
#pragma once

#include <stddef.h>

/* Compiles an extended regular expression (REG_EXTENDED | REG_NOSUB). Returns the compiled
 * expression, or NULL with regerror(3)'s text in message (NUL-terminated, cut to capacity)
 * and the regcomp(3) code in *code (REG_ESPACE as well when malloc fails). */
void *csys_regex_compile(const char *pattern, int *code, char *message, size_t capacity);

/* 1 when the NUL-terminated text matches anywhere, 0 when it does not (regexec(3)). */
int csys_regex_matches(const void *compiled, const char *text);

/* regfree(3) and the allocation. */
void csys_regex_free(void *compiled);
