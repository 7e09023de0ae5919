// A C interface to PyTorch's own distributed engine (c10d) as exported by the libtorch of the PyPI wheel:
// TCPStore rendezvous, ProcessGroupGloo (CPU tensors, and CUDA tensors through host staging),
// ProcessGroupNCCL (CUDA builds only), the DDP gradient Reducer and a SyncBatchNorm autograd function.
//
// Conventions: tensors cross as `at::Tensor*` (what tch's `Tensor::as_ptr` is on the C side); a function
// returns nullptr on success or a malloc'd error message the caller frees with `c10d_free_string`; new
// tensors are returned as `new at::Tensor`, owned by the caller (tch's `Tensor::from_ptr`).
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/comm.hpp>
#include <torch/csrc/distributed/c10d/logger.hpp>
#include <torch/csrc/distributed/c10d/reducer.hpp>

#ifdef CONTRACAM_WITH_NCCL
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace {

char* dup_message(const std::string& s) {
  char* out = static_cast<char*>(std::malloc(s.size() + 1));
  if (out != nullptr) {
    std::memcpy(out, s.c_str(), s.size() + 1);
  }
  return out;
}

// Runs `f`, turning any C++ exception into an error message for the Rust side.
template <typename F>
char* guarded(F&& f) {
  try {
    f();
    return nullptr;
  } catch (const c10::Error& e) {
    // what_without_backtrace: the C++ backtrace of a c10::Error says nothing to a user of contracam.
    return dup_message(e.what_without_backtrace());
  } catch (const std::exception& e) {
    return dup_message(e.what());
  } catch (...) {
    return dup_message("unknown C++ exception in the c10d shim");
  }
}

}  // namespace

struct ContracamGroup {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroup> pg;
  bool nccl = false;
};

struct ContracamReducer {
  std::shared_ptr<c10d::Reducer> reducer;
  std::shared_ptr<c10d::Logger> logger;
};

namespace {

// Collectives block until done: the work objects run on Gloo's worker threads or NCCL streams.
void wait(const c10::intrusive_ptr<c10d::Work>& work) {
  work->wait();
}

std::vector<at::Tensor> gather_to_list(c10d::ProcessGroup& pg, const at::Tensor& input) {
  std::vector<at::Tensor> inputs{input.contiguous()};
  std::vector<std::vector<at::Tensor>> outputs(1);
  for (int r = 0; r < pg.getSize(); ++r) {
    outputs[0].push_back(at::empty_like(inputs[0]));
  }
  wait(pg.allgather(outputs, inputs));
  return outputs[0];
}

void all_reduce_sum(c10d::ProcessGroup& pg, at::Tensor& t) {
  std::vector<at::Tensor> v{t};
  c10d::AllreduceOptions opts;
  opts.reduceOp = c10d::ReduceOp::SUM;
  wait(pg.allreduce(v, opts));
}

std::vector<int64_t> reduce_dims(const at::Tensor& x) {
  std::vector<int64_t> dims{0};
  for (int64_t d = 2; d < x.dim(); ++d) {
    dims.push_back(d);
  }
  return dims;
}

// [C] -> [1, C, 1, ...] to broadcast against an (N, C, ...) input.
at::Tensor per_channel(const at::Tensor& v, const at::Tensor& like) {
  std::vector<int64_t> shape(like.dim(), 1);
  shape[1] = v.size(0);
  return v.reshape(shape);
}

// SyncBatchNorm as torch.nn.SyncBatchNorm's autograd function (`torch/nn/modules/_functions.py`): batch
// statistics over the whole global batch in forward (per-rank mean, variance and count all-gathered, so
// ranks may hold different batch sizes), and in backward the per-channel sums of dy and dy·(x−mean)
// all-reduced before the input gradient. Weight and bias gradients stay local: the gradient reducer
// averages them with every other parameter.
//
// On CUDA it calls the same ATen kernels as PyTorch's SyncBatchNorm (batch_norm_stats,
// batch_norm_gather_stats_with_counts, batch_norm_elemt, batch_norm_backward_reduce/_elemt). Those kernels
// exist only for CUDA, so elsewhere the same quantities come from ordinary tensor ops, the per-rank
// statistics combined with Chan's parallel-variance formula (numerically stable, no E[x²]−E[x]²).
struct SyncBatchNormFn : public torch::autograd::Function<SyncBatchNormFn> {
  static at::Tensor forward(
      torch::autograd::AutogradContext* ctx,
      const at::Tensor& input,
      const at::Tensor& weight,
      const at::Tensor& bias,
      at::Tensor running_mean,
      at::Tensor running_var,
      double momentum,
      double eps,
      c10::intrusive_ptr<c10d::ProcessGroup> pg) {
    TORCH_CHECK(input.dim() >= 2, "SyncBatchNorm: input must have a channel dimension, got ", input.sizes());
    TORCH_CHECK(input.numel() > 0, "SyncBatchNorm: empty input ", input.sizes());
    // On CPU the statistics and the normalisation run in float32 at least, as torch's CPU batch_norm
    // accumulates a bfloat16 input (autocast's conv output) in float; the output keeps the input's dtype.
    // A float32 input is used as it is (`to` returns it), so fp32 is unchanged.
    const auto in_type = input.scalar_type();
    const auto x =
        input.is_cuda() ? input.contiguous() : input.contiguous().to(at::promote_types(in_type, at::kFloat));
    const int64_t channels = x.size(1);
    const int64_t local_count = x.numel() / channels;
    at::Tensor mean, invstd, out, counts;
    if (x.is_cuda()) {
      auto stats = at::batch_norm_stats(x, eps);
      const auto count = at::full({1}, static_cast<double>(local_count), std::get<0>(stats).options());
      const auto combined = at::cat({std::get<0>(stats), std::get<1>(stats), count}, 0);
      const auto all = at::stack(gather_to_list(*pg, combined), 0);
      const auto mean_all = all.narrow(1, 0, channels);
      const auto invstd_all = all.narrow(1, channels, channels);
      const auto count_all = all.narrow(1, 2 * channels, 1);
      auto global = at::batch_norm_gather_stats_with_counts(
          x, mean_all, invstd_all, running_mean, running_var, momentum, eps,
          count_all.reshape({-1}).to(running_mean.defined() ? running_mean.scalar_type() : all.scalar_type()));
      mean = std::get<0>(global);
      invstd = std::get<1>(global);
      counts = count_all.to(at::kInt);
      out = at::batch_norm_elemt(x, weight, bias, mean, invstd, eps);
    } else {
      const auto dims = reduce_dims(x);
      auto var_mean = at::var_mean(x, dims, /*correction=*/at::Scalar(0), /*keepdim=*/false);
      const auto& local_var = std::get<0>(var_mean);
      const auto& local_mean = std::get<1>(var_mean);
      const auto count = at::full({1}, static_cast<double>(local_count), local_mean.options());
      const auto combined = at::cat({local_mean, local_var, count}, 0);
      const auto all = at::stack(gather_to_list(*pg, combined), 0);
      const auto mean_all = all.narrow(1, 0, channels);
      const auto var_all = all.narrow(1, channels, channels);
      const auto count_all = all.narrow(1, 2 * channels, 1);
      const auto total = count_all.sum();
      mean = (mean_all * count_all).sum(0) / total;
      const auto m2 = (count_all * (var_all + (mean_all - mean).square())).sum(0);
      const auto var = m2 / total;
      invstd = (var + eps).rsqrt();
      const double n = total.item<double>();
      if (running_mean.defined()) {
        running_mean.mul_(1.0 - momentum).add_(mean, momentum);
      }
      if (running_var.defined()) {
        // Unbiased, as torch's running_var.
        running_var.mul_(1.0 - momentum).add_(var * (n / std::max(n - 1.0, 1.0)), momentum);
      }
      counts = total.reshape({1});
      auto scale = invstd;
      if (weight.defined()) {
        scale = scale * weight;
      }
      out = (x - per_channel(mean, x)) * per_channel(scale, x);
      if (bias.defined()) {
        out = out + per_channel(bias, x);
      }
      out = out.to(in_type);
    }
    ctx->save_for_backward({x, weight, mean, invstd, counts});
    ctx->saved_data["pg"] = c10::IValue::make_capsule(pg);
    ctx->saved_data["in_type"] = static_cast<int64_t>(in_type);
    return out;
  }

  static torch::autograd::variable_list backward(
      torch::autograd::AutogradContext* ctx,
      torch::autograd::variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const auto& x = saved[0];
    const auto& weight = saved[1];
    const auto& mean = saved[2];
    const auto& invstd = saved[3];
    const auto& counts = saved[4];
    auto pg = c10::static_intrusive_pointer_cast<c10d::ProcessGroup>(ctx->saved_data["pg"].toCapsule());
    // CPU: the saved input is float32 (see forward); the gradient is computed there and returned in the
    // input's dtype.
    const auto in_type = static_cast<at::ScalarType>(ctx->saved_data["in_type"].toInt());
    const auto dy = x.is_cuda() ? grad_outputs[0].contiguous() : grad_outputs[0].contiguous().to(x.scalar_type());
    const bool need_input = ctx->needs_input_grad(0);
    const bool need_weight = ctx->needs_input_grad(1) && weight.defined();
    const bool need_bias = ctx->needs_input_grad(2);
    const int64_t channels = x.size(1);
    at::Tensor grad_input, grad_weight, grad_bias;
    if (x.is_cuda()) {
      auto reduced =
          at::batch_norm_backward_reduce(dy, x, mean, invstd, weight, need_input, need_weight, need_bias);
      grad_weight = std::get<2>(reduced);
      grad_bias = std::get<3>(reduced);
      if (need_input) {
        auto combined = at::cat({std::get<0>(reduced), std::get<1>(reduced)}, 0);
        all_reduce_sum(*pg, combined);
        auto w = weight;
        if (w.defined() && w.scalar_type() != mean.scalar_type()) {
          w = w.to(mean.scalar_type());
        }
        grad_input = at::batch_norm_backward_elemt(
            dy, x, mean, invstd, w, combined.narrow(0, 0, channels), combined.narrow(0, channels, channels),
            counts);
      }
    } else {
      const auto dims = reduce_dims(x);
      const auto xmu = x - per_channel(mean, x);
      auto sum_dy = dy.sum(dims);
      auto sum_dy_xmu = (dy * xmu).sum(dims);
      if (need_weight) {
        grad_weight = sum_dy_xmu * invstd;
      }
      if (need_bias) {
        grad_bias = sum_dy;
      }
      if (need_input) {
        auto combined = at::cat({sum_dy, sum_dy_xmu}, 0);
        all_reduce_sum(*pg, combined);
        const auto total = counts.item<double>();
        const auto mean_dy = combined.narrow(0, 0, channels) / total;
        const auto mean_dy_xmu = combined.narrow(0, channels, channels) / total;
        auto scale = invstd;
        if (weight.defined()) {
          scale = scale * weight;
        }
        grad_input = ((dy - per_channel(mean_dy, x) - xmu * per_channel(invstd * invstd * mean_dy_xmu, x)) *
                      per_channel(scale, x))
                         .to(in_type);
      }
    }
    if (!need_weight) {
      grad_weight = at::Tensor();
    }
    if (!need_bias) {
      grad_bias = at::Tensor();
    }
    // One slot per forward argument: input, weight, bias, running_mean, running_var, momentum, eps, pg.
    return {grad_input, grad_weight, grad_bias, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

at::Tensor opt_tensor(const at::Tensor* t) {
  return t == nullptr ? at::Tensor() : *t;
}

}  // namespace

extern "C" {

void c10d_free_string(char* s) {
  std::free(s);
}

// Rendezvous through a TCPStore (rank 0 hosts it on host:port) and builds the process group: Gloo for CPU
// tensors (and CUDA tensors unless NCCL is asked for), NCCL for CUDA tensors when `use_nccl` (CUDA builds).
// The Gloo device binds to `gloo_interface` if given (GLOO_SOCKET_IFNAME), else to `gloo_hostname` if
// given, else to the address this machine's hostname resolves to (loopback when it resolves to none).
char* c10d_group_new(
    const char* host,
    int port,
    int rank,
    int world_size,
    int64_t timeout_ms,
    const char* gloo_interface,
    const char* gloo_hostname,
    int use_nccl,
    int cuda_device,
    ContracamGroup** out) {
  return guarded([&] {
    const auto timeout = std::chrono::milliseconds(timeout_ms);
    c10d::TCPStoreOptions store_opts;
    store_opts.port = static_cast<std::uint16_t>(port);
    store_opts.isServer = rank == 0;
    store_opts.numWorkers = static_cast<std::size_t>(world_size);
    store_opts.waitWorkers = true;
    store_opts.timeout = timeout;
    auto tcp = c10::make_intrusive<c10d::TCPStore>(std::string(host), store_opts);
    auto store = c10::make_intrusive<c10d::PrefixStore>("contracam", tcp);
    auto group = std::make_unique<ContracamGroup>();
    group->store = store;
    group->pg = c10::make_intrusive<c10d::ProcessGroup>(store, rank, world_size);

    auto gloo_opts = c10d::ProcessGroupGloo::Options::create(timeout);
    if (gloo_interface != nullptr && std::strlen(gloo_interface) > 0) {
      gloo_opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(gloo_interface));
    } else if (gloo_hostname != nullptr && std::strlen(gloo_hostname) > 0) {
      gloo_opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(gloo_hostname));
    } else {
      gloo_opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    }
    gloo_opts->threads = 2;
    auto gloo = c10::make_intrusive<c10d::ProcessGroupGloo>(
        c10::make_intrusive<c10d::PrefixStore>("gloo", store), rank, world_size, gloo_opts);
    group->pg->setBackend(c10::DeviceType::CPU, c10d::ProcessGroup::BackendType::GLOO, gloo);
    group->pg->setDefaultBackend(c10d::ProcessGroup::BackendType::GLOO);
    if (use_nccl != 0) {
#ifdef CONTRACAM_WITH_NCCL
      c10::cuda::set_device(static_cast<c10::DeviceIndex>(cuda_device));
      auto nccl_opts = c10d::ProcessGroupNCCL::Options::create();
      nccl_opts->timeout = timeout;
      auto nccl = c10::make_intrusive<c10d::ProcessGroupNCCL>(
          c10::make_intrusive<c10d::PrefixStore>("nccl", store), rank, world_size, nccl_opts);
      group->pg->setBackend(c10::DeviceType::CUDA, c10d::ProcessGroup::BackendType::NCCL, nccl);
      group->nccl = true;
#else
      (void)cuda_device;
      TORCH_CHECK(false, "NCCL was asked for, but this contracam was built without the `cuda` feature");
#endif
    } else {
      (void)cuda_device;
      group->pg->setBackend(c10::DeviceType::CUDA, c10d::ProcessGroup::BackendType::GLOO, gloo);
    }
    group->pg->setGroupName("contracam");
    *out = group.release();
  });
}

void c10d_group_free(ContracamGroup* g) {
  delete g;
}

int c10d_group_rank(const ContracamGroup* g) {
  return g->pg->getRank();
}

int c10d_group_size(const ContracamGroup* g) {
  return g->pg->getSize();
}

int c10d_has_nccl() {
#ifdef CONTRACAM_WITH_NCCL
  return 1;
#else
  return 0;
#endif
}

// Sums (op 0), or takes the maximum (1) or minimum (2) of, each tensor over all ranks, in place. Several
// tensors travel as one flat buffer per call (they must share dtype and device).
char* c10d_all_reduce(ContracamGroup* g, at::Tensor** tensors, size_t n, int op) {
  return guarded([&] {
    if (n == 0) {
      return;
    }
    std::vector<at::Tensor> flat;
    for (size_t i = 0; i < n; ++i) {
      flat.push_back(tensors[i]->reshape({-1}));
    }
    auto buffer = at::cat(flat, 0);
    c10d::AllreduceOptions opts;
    opts.reduceOp = op == 1 ? c10d::ReduceOp::MAX : op == 2 ? c10d::ReduceOp::MIN : c10d::ReduceOp::SUM;
    std::vector<at::Tensor> v{buffer};
    wait(g->pg->allreduce(v, opts));
    int64_t offset = 0;
    for (size_t i = 0; i < n; ++i) {
      const auto numel = tensors[i]->numel();
      tensors[i]->copy_(buffer.narrow(0, offset, numel).view(tensors[i]->sizes()));
      offset += numel;
    }
  });
}

// Every rank's `input` concatenated along dimension 0 in rank order (shapes must agree).
char* c10d_all_gather(ContracamGroup* g, const at::Tensor* input, at::Tensor** out) {
  return guarded([&] { *out = new at::Tensor(at::cat(gather_to_list(*g->pg, *input), 0)); });
}

// Copies rank `root`'s tensors into every rank's, in place, coalesced into buffers of up to 256 MiB
// (c10d::broadcast_coalesced, as DDP's start-up sync of the module state).
char* c10d_broadcast(ContracamGroup* g, at::Tensor** tensors, size_t n, int root) {
  return guarded([&] {
    std::vector<at::Tensor> v;
    for (size_t i = 0; i < n; ++i) {
      v.push_back(*tensors[i]);
    }
    c10d::broadcast_coalesced(g->pg, v, 256 * 1024 * 1024, root);
  });
}

char* c10d_barrier(ContracamGroup* g) {
  return guarded([&] { wait(g->pg->getBackend(c10::DeviceType::CPU)->barrier()); });
}

// Train-mode SyncBatchNorm (see SyncBatchNormFn); updates the running statistics in place.
char* c10d_sync_batch_norm(
    ContracamGroup* g,
    const at::Tensor* input,
    const at::Tensor* weight,
    const at::Tensor* bias,
    at::Tensor* running_mean,
    at::Tensor* running_var,
    double momentum,
    double eps,
    at::Tensor** out) {
  return guarded([&] {
    auto y = SyncBatchNormFn::apply(
        *input, opt_tensor(weight), opt_tensor(bias), opt_tensor(running_mean), opt_tensor(running_var), momentum,
        eps, g->pg);
    *out = new at::Tensor(y);
  });
}

// DDP's gradient Reducer over `params` (leaf tensors, the same list in the same order on every rank):
// autograd hooks copy each gradient into a flat bucket as backward produces it and all-reduce a bucket as
// soon as it is full, overlapping communication with the rest of backward; the averaged gradients are
// written back before backward returns. The first iteration uses one bucket; afterwards buckets are
// rebuilt in the order gradients arrived (first bucket `first_bucket_bytes`, then `bucket_bytes`), as
// torch.nn.parallel.DistributedDataParallel does with find_unused_parameters=False.
char* c10d_reducer_new(
    ContracamGroup* g,
    at::Tensor** params,
    size_t n,
    int64_t bucket_bytes,
    int64_t first_bucket_bytes,
    ContracamReducer** out) {
  return guarded([&] {
    TORCH_CHECK(n > 0, "the gradient reducer needs at least one parameter");
    std::vector<at::Tensor> ps;
    for (size_t i = 0; i < n; ++i) {
      TORCH_CHECK(params[i]->requires_grad(), "parameter ", i, " does not require a gradient");
      ps.push_back(*params[i]);
    }
    c10d::verify_params_across_processes(g->pg, ps, std::nullopt);
    std::vector<bool> sparse(n, false);
    auto assignment = c10d::compute_bucket_assignment_by_size(
        ps, {static_cast<size_t>(std::numeric_limits<int64_t>::max())}, sparse);
    auto buckets = std::get<0>(assignment);
    std::reverse(buckets.begin(), buckets.end());
    auto handle = std::make_unique<ContracamReducer>();
    handle->reducer = std::make_shared<c10d::Reducer>(
        ps, buckets, g->pg, sparse, bucket_bytes, /*find_unused_parameters=*/false,
        /*gradient_as_bucket_view=*/false, std::unordered_map<size_t, std::string>{}, first_bucket_bytes,
        /*skip_all_reduce_unused_params=*/false, /*use_python_reducer=*/false, std::vector<int64_t>{});
    handle->logger = std::make_shared<c10d::Logger>(handle->reducer);
    handle->reducer->set_logger(handle->logger);
    *out = handle.release();
  });
}

void c10d_reducer_free(ContracamReducer* r) {
  delete r;
}

// Before the step's forward passes: DDP's _pre_forward (prepare_for_forward, then the one-time bucket
// rebuild, a collective on the first call after the first backward).
char* c10d_reducer_prepare_forward(ContracamReducer* r) {
  return guarded([&] {
    r->reducer->prepare_for_forward();
    r->reducer->rebuild_buckets();
  });
}

// After the forward passes, before backward: arms the autograd hooks for one backward.
char* c10d_reducer_prepare_backward(ContracamReducer* r) {
  return guarded([&] { r->reducer->prepare_for_backward({}); });
}

}  // extern "C"
