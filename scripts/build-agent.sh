#!/usr/bin/env bash
# Builds the fully static, stripped guest agent and prints its path on stdout.
# This is the binary a VM image or rootfs embeds (no Swift runtime or libc needed beside it).
#
# - libseccomp: CSeccomp's module map links -lseccomp; with -static-executable the linker only
#   looks at archives, so Debian's libseccomp.a (libseccomp-dev) is what goes in.
# - The regex modules (_StringProcessing, _RegexParser, ~1 MB) are imported into every Swift
#   file implicitly and then linked whole; the agent uses no regex, so that import is off here
#   (the debug build keeps the default, so code that needs it fails to build here, not at run time).
# - --gc-sections drops unreferenced code; .init_array (the CSys early-init constructor) is kept.
# - --icf=all folds functions whose code is identical (generic specialisations, thunks):
#   147 KB less (7.72 -> 7.57 MB).
# Each step below, in the order taken, with the stripped size after it (from 8,297,072 bytes):
# - lld (shipped with Swift) links instead of gold: -40 KB (8,257,208), and it answers
#   --why-live=SYMBOL (what keeps a symbol in the link), which is how the next steps were found.
# - No unwind tables (agent-link/no-unwind-tables.ld): .eh_frame and its index, -1.0 MB
#   (7,257,632). The agent never unwinds; agent-link/unwind_without_tables.c routes the two
#   reachable callers of the unwinder (a crash report's backtrace, a C++ throw that nothing
#   catches) so that each crash path ends as it did, minus its stack trace. Cost: no frames in
#   those reports, and debuggers/profilers cannot unwind the agent by .eh_frame.
# - No Unicode scalar names (agent-link/no_scalar_names.c): the runtime's name tables, -553 KB
#   (6,704,672), read only by Unicode.Scalar.Properties.name, which the agent never asks for;
#   in the agent it answers nil. Comparison, normalisation, grapheme breaking and case mapping
#   keep their tables.
# - The runtime's backtracer buffers, 64 KB of zeros in a section of their own, become
#   zero-filled memory (agent-link/backtrace-buffers-nobits.ld): -66 KB (6,639,040).
# - No C++ demangler (agent-link/no_cxx_demangler.c): -44 KB (6,594,720); a C++ terminate
#   message names the exception's type mangled.
# - A section per function in our Swift modules (-function-sections): -98 KB (6,496,736).
#   Without it each of our object files is one .text section, which --icf and --gc-sections
#   take or leave whole; apart, 1,092 more of our functions fold into an identical one and a
#   few unused ones go. The same machine code, only placed apart. (C's -ffunction-sections for
#   CSys: -480 bytes; not taken.)
# - Measured and not taken: -Osize, a further -153 KB (6,344,032), for an exec about 1% slower
#   and the same CPU per byte streamed (README, Performance): TETHER_AGENT_OPTIMIZE=size builds
#   that variant into .build-static-osize to measure it beside the default. -disable-reflection-
#   metadata, -41 KB: our enums then print as their type's name in "\(value)" (log lines, error
#   texts), their case names come from that metadata.
# What the rest is, and why 4 MB is out of reach with the toolchain's prebuilt libraries:
# README, Performance.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v swift >/dev/null 2>&1 || export PATH=/opt/swift/usr/bin:$PATH
scratch=.build-static
optimize=()
if [[ "${TETHER_AGENT_OPTIMIZE:-speed}" == size ]]; then
  scratch=.build-static-osize
  optimize=(-Xswiftc -Osize)
fi
link="$PWD/scripts/agent-link"
mkdir -p "$scratch/agent-link"
# The link-time replacements, compiled with the toolchain's clang. SwiftPM does not know these
# objects are inputs of the link, so a changed object removes the linked agent to force a relink.
clang="$(dirname "$(command -v swift)")/clang"
for source in unwind_without_tables no_scalar_names no_cxx_demangler; do
  object="$scratch/agent-link/$source.o"
  "$clang" -O2 -Wall -Wextra -Werror -fno-asynchronous-unwind-tables -c \
    -o "$object.new" "$link/$source.c"
  if cmp -s "$object.new" "$object"; then rm "$object.new"; else
    mv "$object.new" "$object"
    rm -f "$scratch"/*/release/tether-agent
  fi
done
flags=(-c release --product tether-agent --scratch-path "$scratch"
       -Xswiftc -static-executable -Xswiftc -use-ld=lld
       -Xlinker --gc-sections -Xlinker --icf=all
       -Xlinker -T -Xlinker "$link/no-unwind-tables.ld"
       -Xlinker --wrap=_Unwind_Backtrace -Xlinker --wrap=_Unwind_RaiseException
       -Xlinker "$PWD/$scratch/agent-link/unwind_without_tables.o"
       -Xlinker --wrap=_swift_stdlib_getScalarName
       -Xlinker "$PWD/$scratch/agent-link/no_scalar_names.o"
       -Xlinker --wrap=__cxa_demangle -Xlinker "$PWD/$scratch/agent-link/no_cxx_demangler.o"
       -Xlinker -T -Xlinker "$link/backtrace-buffers-nobits.ld"
       -Xswiftc -Xfrontend -Xswiftc -disable-implicit-string-processing-module-import
       -Xswiftc -Xfrontend -Xswiftc -function-sections
       "${optimize[@]}")
# The Swift driver does not recompile when only -Xfrontend flags change (it kept objects built
# without -function-sections), so a build with other flags than the last one starts clean.
signature="${flags[*]}"
if [[ "$(cat "$scratch/flags" 2>/dev/null)" != "$signature" ]]; then
  rm -rf "$scratch"/*/release "$scratch/flags"
fi
swift build "${flags[@]}" >&2
echo "$signature" > "$scratch/flags"
bin="$(swift build "${flags[@]}" --show-bin-path)/tether-agent"
strip -o "$scratch/tether-agent" "$bin"
if readelf -l "$scratch/tether-agent" | grep -q INTERP; then
  echo "build-agent.sh: $scratch/tether-agent is not static" >&2
  exit 1
fi
if readelf -S "$scratch/tether-agent" | grep -q eh_frame; then
  echo "build-agent.sh: $scratch/tether-agent still has unwind tables" >&2
  exit 1
fi
echo "build-agent.sh: $(stat -c %s "$scratch/tether-agent") bytes stripped" >&2
echo "$PWD/$scratch/tether-agent"
