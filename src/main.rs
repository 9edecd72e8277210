//! The `signal-manager-service` binary; everything lives in the library
//! (`signal_manager_service::cli`).

fn main() -> std::process::ExitCode {
    signal_manager_service::cli::main()
}
