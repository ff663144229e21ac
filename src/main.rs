//! The `gfast` binary: everything lives in the library.

fn main() -> std::process::ExitCode {
    gfast::cli::run()
}
