//! The build and machine report recorded in every results file.
use serde::Serialize;

/// Versions and hardware, recorded in every results file.
#[derive(Debug, Clone, Serialize)]
pub struct EnvReport {
    pub contracam: String,
    pub git_hash: String,
    pub tch: String,
    pub libtorch: String,
    /// libtorch_cuda is linked and its runtime hooks are loaded (true with `--features cuda`).
    pub cuda_linked: bool,
    pub cuda_available: bool,
    pub cuda_devices: Vec<String>,
    pub cpu_threads: usize,
    /// CPU model (`/proc/cpuinfo`), and the widest vector ISA libtorch's CPU kernels can dispatch to: CPU
    /// training results differ in the last bits between ISA paths, and the trajectories drift apart.
    pub cpu_model: String,
    pub cpu_isa: String,
    pub torch_threads: i32,
    pub os: String,
}

/// libtorch's version string, read from the loaded library's build configuration.
pub fn libtorch_version() -> String {
    // The wheel's version.py sits beside lib/ and is what tch's build checked; fall back to the constant.
    let from_file = option_env!("LIBTORCH")
        .map(|p| std::path::Path::new(p).join("version.py"))
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("__version__ = ")
                    .map(|v| v.trim_matches(|c| c == '\'' || c == '"').to_string())
            })
        });
    from_file.unwrap_or_else(|| "2.11.0".to_string())
}

pub fn env_report() -> EnvReport {
    let cuda_available = tch::Cuda::is_available();
    let n = if cuda_available {
        tch::Cuda::device_count()
    } else {
        0
    };
    let cuda_devices = (0..n).map(|i| cuda_device_name(i as usize)).collect();
    EnvReport {
        contracam: env!("CARGO_PKG_VERSION").to_string(),
        git_hash: env!("CONTRACAM_GIT_HASH").to_string(),
        tch: "0.24.0".to_string(),
        libtorch: libtorch_version(),
        cuda_linked: tch::utils::has_cudart(),
        cuda_available,
        cuda_devices,
        cpu_threads: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        cpu_model: cpu_model(),
        cpu_isa: cpu_isa(),
        torch_threads: tch::get_num_threads(),
        os: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|r| r.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The capability ATen's CPU dispatcher picks: avx512 needs AVX-512 F/BW/VL/DQ and FMA, avx2 needs AVX2 and
/// FMA. A valid `ATEN_CPU_CAPABILITY` overrides it (ATen honours it) and is reported as such.
fn cpu_isa() -> String {
    if let Ok(v) = std::env::var("ATEN_CPU_CAPABILITY") {
        if ["default", "avx2", "avx512"].contains(&v.as_str()) {
            return format!("{v} (ATEN_CPU_CAPABILITY)");
        }
    }
    #[cfg(target_arch = "x86_64")]
    {
        let fma = is_x86_feature_detected!("fma");
        if fma
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512dq")
        {
            return "avx512".into();
        }
        if fma && is_x86_feature_detected!("avx2") {
            return "avx2".into();
        }
    }
    "default".into()
}

/// The CUDA device's marketing name. tch exposes none, so ask the CUDA runtime that libtorch already loaded
/// (cudaGetDeviceProperties: `name` is the struct's first field, char[256]).
fn cuda_device_name(i: usize) -> String {
    cudart_device_name(i as i32).unwrap_or_else(|| format!("CUDA device {i}"))
}

fn cudart_device_name(i: i32) -> Option<String> {
    type GetProps = unsafe extern "C" fn(*mut u8, i32) -> i32;
    // SAFETY: cudart is already mapped by libtorch when CUDA is available; the buffer is far larger than
    // cudaDeviceProp (about 1 KiB in CUDA 12/13) and we only read the NUL-terminated name at its start.
    unsafe {
        let lib = ["libcudart.so.13", "libcudart.so.12", "libcudart.so"]
            .iter()
            .find_map(|n| libloading::Library::new(n).ok())?;
        let f: libloading::Symbol<GetProps> = lib
            .get(b"cudaGetDeviceProperties_v2\0")
            .or_else(|_| lib.get(b"cudaGetDeviceProperties\0"))
            .ok()?;
        let mut buf = vec![0u8; 16384];
        if f(buf.as_mut_ptr(), i) != 0 {
            return None;
        }
        let end = buf.iter().take(256).position(|&b| b == 0).unwrap_or(256);
        let name = String::from_utf8_lossy(&buf[..end]).trim().to_string();
        (!name.is_empty()).then_some(name)
    }
}
