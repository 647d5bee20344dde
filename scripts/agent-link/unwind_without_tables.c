// Linked into the static agent only (scripts/build-agent.sh), which is linked without unwind
// tables (no-unwind-tables.ld). libgcc's unwinder first looks up the frame of its own caller;
// with no table that lookup fails and it calls abort() on the spot instead of reporting the end
// of the stack. Two callers of the unwinder are linked into the agent and reachable on a
// crash path; with --wrap each of their calls lands here and is told "end of stack" at once,
// which is what they already get today after the last frame, so each carries on as before:
//
// - _Unwind_Backtrace: the Swift runtime's printCurrentBacktrace, called when it reports a fatal
//   exclusivity conflict ("Simultaneous accesses to ..."). It prints no frames and goes on to
//   its fatal error (message, then the trap), instead of dying in the unwinder before it.
// - _Unwind_RaiseException: __cxa_throw, reached only from libstdc++'s throw helpers (operator
//   new out of memory, std::function called empty, length errors). Nothing linked into the agent
//   catches a C++ exception (the Swift runtime is built without exceptions), so with the tables
//   the search also ends with no handler; __cxa_throw then calls std::terminate, which prints
//   "terminate called after throwing an instance of 'std::length_error'" and aborts, as it does
//   with them. Only its second line, the exception's what(), is lost: the handler rethrows to
//   read it, and that catch needs the tables ("terminate called recursively" instead).
//
// The third caller, _Unwind_ForcedUnwind, runs only for pthread_exit or a thread cancellation;
// neither is linked into the agent (it starts no threads). What is lost: a stack trace of the
// agent's own frames from the runtime on an exclusivity conflict, and unwinding by debuggers or
// profilers that read .eh_frame (they fall back to frame pointers where the code keeps them).
#include <unwind.h>

_Unwind_Reason_Code __wrap__Unwind_Backtrace(_Unwind_Trace_Fn trace, void *context);
_Unwind_Reason_Code __wrap__Unwind_RaiseException(struct _Unwind_Exception *exception);

_Unwind_Reason_Code __wrap__Unwind_Backtrace(_Unwind_Trace_Fn trace, void *context) {
  (void)trace;
  (void)context;
  return _URC_END_OF_STACK;
}

_Unwind_Reason_Code __wrap__Unwind_RaiseException(struct _Unwind_Exception *exception) {
  (void)exception;
  return _URC_END_OF_STACK;
}
