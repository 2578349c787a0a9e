// Parsing a large stacks repo allocates millions of small values; mimalloc does that several
// times faster than the system allocator here (see docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(reconciler::cli::main());
}
