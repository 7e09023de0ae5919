// See gloo_decls/gloo/README.md. ProcessGroupGloo.hpp's inline setTimeout calls Context::setTimeout, so the
// declaration carries that one member; the shim never calls it.
#pragma once
#include <chrono>

namespace gloo {
class Context {
 public:
  void setTimeout(std::chrono::milliseconds timeout);
};
namespace transport {
class Device;
class UnboundBuffer;
} // namespace transport
} // namespace gloo
