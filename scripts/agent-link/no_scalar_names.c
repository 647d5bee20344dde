// Linked into the static agent only (scripts/build-agent.sh), with
// --wrap=_swift_stdlib_getScalarName: every call the standard library makes to the runtime's
// Unicode scalar-name lookup lands here instead, so the runtime's own lookup and the ~550 KB of
// name tables only it reads (names, their word lists and indices) are unreferenced and
// --gc-sections drops them.
//
// The only caller is Unicode.Scalar.Properties.name, which is part of the standard library's
// always-linked code; nothing in the agent asks for a scalar's name. Returning 0 (no bytes
// written) is what the runtime returns for a scalar without a name, so in the agent
// `scalar.properties.name` is nil for every scalar. Everything else about Unicode (comparison,
// normalisation, grapheme breaking, case mapping, properties) keeps the runtime's tables.
#include <stdint.h>

intptr_t __wrap__swift_stdlib_getScalarName(uint32_t scalar, uint8_t *nameBuffer,
                                           intptr_t nameSize);

intptr_t __wrap__swift_stdlib_getScalarName(uint32_t scalar, uint8_t *nameBuffer,
                                           intptr_t nameSize) {
  (void)scalar;
  (void)nameBuffer;
  (void)nameSize;
  return 0;
}
