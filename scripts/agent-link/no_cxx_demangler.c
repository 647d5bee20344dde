// Linked into the static agent only (scripts/build-agent.sh), with --wrap=__cxa_demangle: the
// C++ demangler of libstdc++ (42 KB) then has no caller and --gc-sections drops it.
//
// Its two callers in the agent both print a name on a crash path and fall back to the mangled
// name when demangling fails, which is what this answers (status -2: "not a valid name"):
// - libstdc++'s terminate handler: "terminate called after throwing an instance of
//   'St12length_error'" instead of 'std::length_error' (no C++ exception is caught or expected
//   in the agent; see unwind_without_tables.c).
// - the Swift runtime's stack-trace line for an exclusivity conflict, which names a C++ symbol
//   only when dladdr finds one; in a static binary it finds none and prints "<unknown>" anyway.
#include <stddef.h>

char *__wrap___cxa_demangle(const char *mangledName, char *outputBuffer, size_t *length,
                            int *status);

char *__wrap___cxa_demangle(const char *mangledName, char *outputBuffer, size_t *length,
                            int *status) {
  (void)mangledName;
  (void)outputBuffer;
  (void)length;
  if (status != NULL) *status = -2;
  return NULL;
}
