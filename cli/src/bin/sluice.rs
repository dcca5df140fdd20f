//! `sluice`: see `sluice --help`.

fn main() -> std::process::ExitCode {
    sluice_cli::main()
}
