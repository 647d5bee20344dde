#include "ckrun.h"
