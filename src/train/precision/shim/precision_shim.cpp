// Autocast and memory format for contracam's training, as a C interface to libtorch's own C++ API. tch 0.24
// has neither: its `autocast` toggles CUDA autocast only (and only with a GPU present), with no dtype, and no
// tensor or module method takes a memory format. A sibling of the c10d shim, compiled the same way (C++17
// against the wheel's headers), but its own library: it needs none of c10d's headers or defines, and a change
// here does not recompile the c10d shim.
//
// Conventions as the c10d shim: tensors cross as `at::Tensor*`; a fallible call returns nullptr or a malloc'd
// message freed with `contracam_precision_free_string`; new tensors come back as `new at::Tensor`, owned by
// the caller.
#include <cstdlib>
#include <cstring>
#include <string>

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>

namespace {

char* dup_message(const std::string& s) {
  char* out = static_cast<char*>(std::malloc(s.size() + 1));
  if (out != nullptr) {
    std::memcpy(out, s.c_str(), s.size() + 1);
  }
  return out;
}

template <typename F>
char* guarded(F&& f) {
  try {
    f();
    return nullptr;
  } catch (const c10::Error& e) {
    return dup_message(e.what_without_backtrace());
  } catch (const std::exception& e) {
    return dup_message(e.what());
  } catch (...) {
    return dup_message("unknown C++ exception in the precision shim");
  }
}

// Only the device types autocast has a lower-precision path for in this build of contracam.
bool device_type_of(int code, at::DeviceType* out) {
  switch (code) {
    case 0:
      *out = at::DeviceType::CPU;
      return true;
    case 1:
      *out = at::DeviceType::CUDA;
      return true;
    default:
      return false;
  }
}

at::MemoryFormat memory_format_of(int channels_last) {
  return channels_last != 0 ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

}  // namespace

extern "C" {

void contracam_precision_free_string(char* s) {
  std::free(s);
}

// Enters an autocast region as `torch.autocast(device_type, dtype)`'s __enter__ does: the previous enabled
// flag, dtype and cache flag go to `prev_*` (for `contracam_autocast_exit`), autocast is switched on with
// `dtype` (a c10::ScalarType code) and the cast cache on, and the nesting count goes up.
char* contracam_autocast_enter(int device_type, int dtype, int* prev_enabled, int* prev_dtype,
                               int* prev_cache) {
  return guarded([&] {
    at::DeviceType dt;
    TORCH_CHECK(device_type_of(device_type, &dt), "autocast: unsupported device type code ", device_type);
    TORCH_CHECK(at::autocast::is_autocast_available(dt), "autocast is not available for ", dt);
    const auto st = static_cast<at::ScalarType>(dtype);
    TORCH_CHECK(st == at::kBFloat16 || st == at::kHalf, "autocast: dtype ", st,
                " is not a lower-precision floating type");
    *prev_enabled = at::autocast::is_autocast_enabled(dt) ? 1 : 0;
    *prev_dtype = static_cast<int>(at::autocast::get_autocast_dtype(dt));
    *prev_cache = at::autocast::is_autocast_cache_enabled() ? 1 : 0;
    at::autocast::set_autocast_enabled(dt, true);
    at::autocast::set_autocast_dtype(dt, st);
    at::autocast::increment_nesting();
    at::autocast::set_autocast_cache_enabled(true);
  });
}

// Leaves the region as __exit__ does: the cast cache (bf16 copies of the weights, stale once the optimiser
// steps) is cleared when the outermost region ends, then the previous state comes back. Never fails.
void contracam_autocast_exit(int device_type, int prev_enabled, int prev_dtype, int prev_cache) {
  at::DeviceType dt;
  if (!device_type_of(device_type, &dt)) {
    return;
  }
  try {
    if (at::autocast::decrement_nesting() == 0) {
      at::autocast::clear_cache();
    }
    at::autocast::set_autocast_enabled(dt, prev_enabled != 0);
    at::autocast::set_autocast_dtype(dt, static_cast<at::ScalarType>(prev_dtype));
    at::autocast::set_autocast_cache_enabled(prev_cache != 0);
  } catch (...) {
    // Called from a Rust Drop, possibly while unwinding: nothing to report to.
  }
}

// Whether autocast is on for the device type on this thread (-1: unknown device type code).
int contracam_autocast_enabled(int device_type) {
  at::DeviceType dt;
  if (!device_type_of(device_type, &dt)) {
    return -1;
  }
  return at::autocast::is_autocast_enabled(dt) ? 1 : 0;
}

// The dtype autocast casts to on the device type (a c10::ScalarType code; -1: unknown device type code).
int contracam_autocast_dtype(int device_type) {
  at::DeviceType dt;
  if (!device_type_of(device_type, &dt)) {
    return -1;
  }
  return static_cast<int>(at::autocast::get_autocast_dtype(dt));
}

// `t.contiguous(memory_format=...)`: `t` itself when already laid out so, else a copy (autograd records it).
char* contracam_to_memory_format(const at::Tensor* t, int channels_last, at::Tensor** out) {
  return guarded([&] { *out = new at::Tensor(t->contiguous(memory_format_of(channels_last))); });
}

// `t.is_contiguous(memory_format=...)`.
int contracam_is_contiguous_in(const at::Tensor* t, int channels_last) {
  return t->is_contiguous(memory_format_of(channels_last)) ? 1 : 0;
}

// `module.to(memory_format=...)` for the given parameters and buffers: each 4-d tensor gets its data
// re-laid out in place (`param.data = param.data.contiguous(format)`), so every handle that shares it
// (optimiser, EMA pairs, the variable store) sees the new layout; other tensors are left alone.
char* contracam_tensors_to_memory_format(at::Tensor** tensors, size_t n, int channels_last) {
  return guarded([&] {
    const auto format = memory_format_of(channels_last);
    at::NoGradGuard no_grad;
    for (size_t i = 0; i < n; ++i) {
      at::Tensor& t = *tensors[i];
      if (t.dim() == 4 && !t.is_contiguous(format)) {
        t.set_data(t.detach().contiguous(format));
      }
    }
  });
}

}  // extern "C"
