//! `contracam env`: what this build and this machine offer.
use std::process::ExitCode;

use super::{DeviceArg, GlobalArgs, ThreadsArg};

#[derive(Debug, clap::Args)]
pub struct EnvArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub device: DeviceArg,
    #[command(flatten)]
    pub threads: ThreadsArg,
}

pub fn run(args: EnvArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let report = contracam::util::env_report();
    let resolved = global.device.resolve().map(contracam::device::describe);
    if args.json {
        let mut v = serde_json::to_value(&report)?;
        // A plain string either way; a device that cannot be used goes to `device_error` instead.
        match &resolved {
            Ok(d) => v["device"] = serde_json::json!(d),
            Err(e) => {
                v["device"] = serde_json::Value::Null;
                v["device_error"] = serde_json::json!(e.to_string());
            }
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("contracam      {}", report.contracam);
        println!("libtorch       {} (tch {})", report.libtorch, report.tch);
        println!("cuda linked    {}", report.cuda_linked);
        println!("cuda available {}", report.cuda_available);
        for (i, name) in report.cuda_devices.iter().enumerate() {
            println!("  cuda:{i}       {name}");
        }
        println!(
            "cpu            {} (libtorch kernels: {})",
            report.cpu_model, report.cpu_isa
        );
        println!(
            "cpu threads    {} usable; running with {} libtorch, {} rayon ({})",
            report.cpu_threads,
            report.torch_threads,
            rayon::current_num_threads(),
            contracam::util::threads::plan(global.threads).reason
        );
        match resolved {
            Ok(d) => println!("device         {} (--device {})", d, global.device),
            Err(e) => println!("device         error: {e}"),
        }
    }
    Ok(ExitCode::SUCCESS)
}
