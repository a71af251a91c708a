use which::which;

/// Rebuild when bpf-linker changes (a new LLVM changes the object).
fn main() {
    if let Ok(linker) = which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
