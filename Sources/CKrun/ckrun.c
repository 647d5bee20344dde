/* CKrun is declarations only (see include/ckrun.h); SwiftPM needs one source file per C target. */
#include "ckrun.h"
