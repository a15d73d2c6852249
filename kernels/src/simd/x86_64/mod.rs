//! x86-64 kernels: AVX2 (+FMA, F16C), AVX2 with 256-bit VNNI (AVX-VNNI, and its AVX-512 VNNI
//! twin), and AVX-512 (F, BW, VL, VNNI).

pub mod avx2;
pub mod avx512;
mod avx512_k;
pub mod avxvnni;
