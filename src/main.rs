fn main() {
    std::process::exit(preloadd::cli::main());
}
