use which::which;

/// Building this crate needs the `bpf-linker` binary, which cargo cannot express as a
/// dependency; rebuild when it changes. `cargo xtask setup` installs it.
fn main() {
    match which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(_) => println!(
            "cargo:warning=bpf-linker not found on PATH; run `cargo xtask setup` to install it"
        ),
    }
}
