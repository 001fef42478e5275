//! Which kernels this CPU runs: printed, so a log says which path the other tests took (under
//! qemu, `-cpu cortex-a76` must take the SDOT kernels and `-cpu cortex-a72` the plain NEON ones),
//! and checked against `LLAVA_EDGE_EXPECT_GEMM` (a `GemmKind` name) when that is set.

use llava_edge::kernels::Cpu;

#[test]
fn dispatch_is_what_the_cpu_offers() {
    let cpu = Cpu::get();
    let isa = cpu.isa();
    let gemm = cpu.gemm().kind();
    let float = cpu.float().kind();
    let bf16 = cpu.bf16().map(|b| b.kind());
    println!(
        "kernels: {:?} (quantized dots and GEMMs {gemm:?}, float GEMMs and attention {float:?}, \
         bfloat16 {bf16:?})",
        isa.kind()
    );
    if let Ok(want) = std::env::var("LLAVA_EDGE_EXPECT_GEMM") {
        assert_eq!(format!("{gemm:?}"), want, "quantized GEMM kernels");
    }
}
