//! `beckon`: parses the command line and hands over to `beckon::cli`.

fn main() -> std::process::ExitCode {
    beckon::cli::main()
}
