//! Compiles `src/execl.c`, the three C-variadic exec shims (execl, execlp, execle) that stable Rust cannot define.

const SRC: &str = "src/execl.c";

fn main() {
    println!("cargo:rerun-if-changed={SRC}");
    cc::Build::new()
        .file(SRC)
        .warnings(true)
        .extra_warnings(true)
        .flag("-fvisibility=hidden")
        .compile("ringwatch_execl");
}
