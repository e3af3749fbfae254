// What the "cuda" backend object says about itself without touching CUDA: its name, description,
// capabilities and rank kinds. Shared by the backend object (backend.cc) and, in CUDA builds of
// the hetsynth program, by the stand-in that loads the backend's module on first use
// (lazy/backend_lazy.cc), so that both answer alike.
#pragma once

#include <string>
#include <string_view>

#include "hetsynth/runtime/backend.h"

namespace hetsynth::runtime::cuda_backend_info {

inline constexpr std::string_view kName = "cuda";
inline constexpr std::string_view kDescription =
    "NVIDIA GPUs: cuBLAS GEMMs and hetsynth's kernels; NCCL between processes, green contexts for virtual GPUs";

inline BackendCapabilities Capabilities() {
  BackendCapabilities caps;
  caps.device = "GPU";
  caps.precisions = {"fp32", "tf32", "bf16"};  // gpu::ParsePrecision's names
  caps.emulate_gpus = true;
  caps.virtual_devices = "green contexts with SM shares by speed";
  caps.thread_ranks = false;
  caps.emulated_timing = false;
  caps.host_memory = false;
  caps.profile_ranks = "virtual GPUs";
  caps.max_profile_ranks = 64;  // gpu::kMaxCommRanks, the in-process device communicator's limit
  return caps;
}

inline std::string RankKind(const RankOptions& options) { return options.emulate_gpus ? "virtual GPU" : "GPU (NCCL)"; }

// The module's entry point (CUDA builds of the hetsynth program): extern "C" Backend*
// hetsynth_cuda_module_backend(const char* abi), nullptr when `abi` is not the module's kModuleAbi
// (a module of another version of this interface; raise the number when Backend or the types its
// methods take change).
inline constexpr char kModuleEntry[] = "hetsynth_cuda_module_backend";
inline constexpr char kModuleAbi[] = "hetsynth-cuda-module/2";

}  // namespace hetsynth::runtime::cuda_backend_info
