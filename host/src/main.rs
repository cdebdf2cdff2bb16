fn main() -> std::process::ExitCode {
    corral_host::cli::main()
}
