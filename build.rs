//! Builds the CPU emulation of the CUDA kernels when the `cuda-emu` feature is on: kernels/*.cu
//! compiled by the C++ compiler with kernels/cuda_emu.h. `CXR_EMU_SANITIZE=thread|address`
//! instruments them (scripts/cuda_sanitize.sh).

fn main() {
    println!("cargo:rerun-if-changed=kernels");
    println!("cargo:rerun-if-env-changed=CXR_EMU_SANITIZE");
    #[cfg(feature = "cuda-emu")]
    emu::build();
}

#[cfg(feature = "cuda-emu")]
mod emu {
    pub fn build() {
        let mut b = cc::Build::new();
        b.cpp(true)
            .file("kernels/emu_exports.cpp")
            .include("kernels")
            .flag("-std=c++20")
            .flag("-pthread")
            .flag("-Wall")
            .flag("-Wextra")
            .flag("-Werror")
            .opt_level(2);
        if let Ok(kind) = std::env::var("CXR_EMU_SANITIZE") {
            if !kind.is_empty() {
                b.flag(format!("-fsanitize={kind}")).flag("-fno-omit-frame-pointer").flag("-g");
                println!("cargo:rustc-link-lib=dylib={}", if kind == "thread" { "tsan" } else { "asan" });
            }
        }
        b.compile("cxr_cuda_emu");
        println!("cargo:rustc-link-lib=dylib=stdc++");
        println!("cargo:rustc-link-lib=dylib=pthread");
    }
}
