//! Device selection: `auto | cpu | cuda | cuda:N`.
use std::str::FromStr;
use tch::Device;

/// A device request as the user wrote it; resolved against the machine with [`DeviceSpec::resolve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    /// CUDA device 0 when CUDA is available, else the CPU.
    #[default]
    Auto,
    Cpu,
    Cuda(usize),
}

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("invalid device '{0}': expected auto, cpu, cuda or cuda:N")]
    Parse(String),
    #[error("device cuda:{index} requested but {available} CUDA device(s) are available (libtorch_cuda linked: {cuda_linked}; a GPU build needs --features cuda)")]
    Unavailable {
        index: usize,
        available: usize,
        cuda_linked: bool,
    },
}

impl FromStr for DeviceSpec {
    type Err = DeviceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse::<usize>().ok())
                .map(Self::Cuda)
                .ok_or_else(|| DeviceError::Parse(s.to_string())),
        }
    }
}

impl std::fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Auto => write!(f, "auto"),
            Self::Cpu => write!(f, "cpu"),
            Self::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

impl DeviceSpec {
    pub fn resolve(self) -> Result<Device, DeviceError> {
        match self {
            Self::Auto => Ok(Device::cuda_if_available()),
            Self::Cpu => Ok(Device::Cpu),
            Self::Cuda(index) => {
                let available = if tch::Cuda::is_available() {
                    tch::Cuda::device_count() as usize
                } else {
                    0
                };
                if index < available {
                    Ok(Device::Cuda(index))
                } else {
                    Err(DeviceError::Unavailable {
                        index,
                        available,
                        cuda_linked: tch::utils::has_cudart(),
                    })
                }
            }
        }
    }
}

/// Human-readable device name for reports.
pub fn describe(device: Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}"),
    }
}
