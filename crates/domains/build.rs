//! Compiles every `src/bpf/**/*.bpf.c` into a BPF object and a libbpf-rs skeleton in `OUT_DIR`
//! (`src/bpf/process/sched.bpf.c` -> `$OUT_DIR/sched.bpf.o` + `$OUT_DIR/sched.skel.rs`), included by the
//! backend with `include!(concat!(env!("OUT_DIR"), "/sched.skel.rs"))`.
//!
//! `src/bpf/include/vmlinux.h` is committed, so building needs clang but not bpftool or a BTF-enabled host.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

use libbpf_cargo::SkeletonBuilder;

/// Root of the BPF tree; every change below it reruns this script (shared headers feed every object).
const BPF_DIR: &str = "src/bpf";

fn main() {
    // Cargo scans a directory recursively for changed mtimes, so this covers every source and shared header.
    println!("cargo:rerun-if-changed={BPF_DIR}");
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let bpf = manifest.join(BPF_DIR);

    let mut sources = Vec::new();
    collect_sources(&bpf, &mut sources);
    sources.sort();

    let include = bpf.join("include");
    let lib = bpf.join("lib");
    let mut stems = Vec::new();
    for src in &sources {
        let file = src.file_name().and_then(|f| f.to_str()).expect("collect_sources keeps UTF-8 names only");
        let stem = file.strip_suffix(".bpf.c").expect("collect_sources keeps *.bpf.c only");
        if stems.contains(&stem.to_owned()) {
            panic!("two BPF sources named {file}: skeleton names must be unique across src/bpf");
        }
        stems.push(stem.to_owned());
        let obj = out.join(format!("{stem}.bpf.o"));
        let skel = out.join(format!("{stem}.skel.rs"));
        let result = SkeletonBuilder::new()
            .source(src)
            .obj(&obj)
            .clang_args([
                "-I".as_ref(),
                include.as_os_str(),
                "-I".as_ref(),
                lib.as_os_str(),
                "-Wall".as_ref(),
                "-Werror".as_ref(),
                // BPF ISA v3 (kernel 5.1+): 32-bit jumps and ALU, fewer instructions for the verifier.
                "-mcpu=v3".as_ref(),
            ])
            .build_and_generate(&skel);
        if let Err(e) = result {
            panic!("building BPF skeleton from {}: {e:#}", src.display());
        }
    }
}

/// Every `*.bpf.c` under `dir`, recursively.
fn collect_sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_sources(&path, out);
        } else if path.file_name().and_then(|f| f.to_str()).is_some_and(|f| f.ends_with(".bpf.c")) {
            out.push(path);
        }
    }
}
