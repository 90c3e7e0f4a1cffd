//! The `byol` command-line tool.

fn main() -> std::process::ExitCode {
    byol::malloc_tuning::keep_freed_memory();
    match byol::cli::run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
