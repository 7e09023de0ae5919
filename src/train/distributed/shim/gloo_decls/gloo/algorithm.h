// See gloo_decls/gloo/README.md.
#pragma once
#include <gloo/context.h>
