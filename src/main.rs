fn main() {
    std::process::exit(reconciler::cli::main());
}
