//! Which instruction set the kernels use: detected from the CPU once per process, or forced
//! with `CHATGLM_KERNELS=scalar|avx2|avxvnni|avx512|neon|dotprod|i8mm` (or `auto`;
//! `avxvnni-evex` is a testing twin of `avxvnni`, see [`Isa::AvxvnniEvex`]).
//!
//! No `target-cpu=native` build is needed: the SIMD kernels are compiled with
//! `#[target_feature]` and chosen at run time. [`kernels`] returns the table in use; it is
//! fixed on first use ([`active`]). Tests and benchmarks pick a table directly with
//! [`Isa::kernels`].

use crate::simd::{scalar, Kernels};
use crate::KernelError;
use std::fmt;
use std::sync::OnceLock;

/// The environment variable that forces a kernel path.
pub const ENV_VAR: &str = "CHATGLM_KERNELS";

/// An instruction set with a kernel table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Portable Rust, the reference.
    Scalar,
    /// x86-64 AVX2 with FMA and F16C (Haswell, Zen 1 and later).
    Avx2,
    /// x86-64 AVX2 with AVX-VNNI (`vpdpbusd` on 256-bit registers, VEX-encoded), plus FMA and
    /// F16C: Intel since Alder Lake, without AVX-512. Chosen when AVX-512 VNNI is absent.
    Avxvnni,
    /// The [`Isa::Avxvnni`] kernels compiled with the EVEX `vpdpbusd` of AVX-512 VNNI and VL
    /// instead, so that CPUs with AVX-512 VNNI but no AVX-VNNI (AMD Zen 4 and 5) run and test
    /// the same code. Never chosen automatically (the `avx512` table is faster there).
    AvxvnniEvex,
    /// x86-64 AVX-512 F/BW/VL with VNNI (`vpdpbusd`), plus AVX2 and F16C (Ice Lake, Zen 4 and
    /// later).
    Avx512,
    /// aarch64 NEON without dot products (Cortex-A72, Raspberry Pi 4).
    Neon,
    /// aarch64 NEON with `sdot` (Cortex-A76, Raspberry Pi 5).
    Dotprod,
    /// aarch64 NEON with `sdot` and the int8 matrix multiply `smmla` (Apple M2 and later,
    /// Graviton 3, Cortex-A510/A710 and later).
    I8mm,
}

impl Isa {
    /// Every instruction set, from the most portable to the fastest of each architecture.
    pub const ALL: [Isa; 8] = [
        Isa::Scalar,
        Isa::Avx2,
        Isa::Avxvnni,
        Isa::AvxvnniEvex,
        Isa::Avx512,
        Isa::Neon,
        Isa::Dotprod,
        Isa::I8mm,
    ];

    /// The name used by `CHATGLM_KERNELS` and printed by `chatglm info`.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avxvnni => "avxvnni",
            Isa::AvxvnniEvex => "avxvnni-evex",
            Isa::Avx512 => "avx512",
            Isa::Neon => "neon",
            Isa::Dotprod => "dotprod",
            Isa::I8mm => "i8mm",
        }
    }

    /// Parses a name (case-insensitive).
    pub fn from_name(name: &str) -> Option<Isa> {
        Self::ALL
            .into_iter()
            .find(|i| i.name().eq_ignore_ascii_case(name.trim()))
    }

    /// The kernel table of this instruction set, if this CPU can run it (the features are
    /// checked on every call; cheap, but keep the table rather than calling this per product).
    pub fn kernels(self) -> Option<&'static Kernels> {
        match self {
            Isa::Scalar => Some(&scalar::KERNELS),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => crate::simd::x86_64::avx2::kernels(),
            #[cfg(target_arch = "x86_64")]
            Isa::Avxvnni => crate::simd::x86_64::avxvnni::vex::kernels(),
            #[cfg(target_arch = "x86_64")]
            Isa::AvxvnniEvex => crate::simd::x86_64::avxvnni::evex::kernels(),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => crate::simd::x86_64::avx512::kernels(),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => crate::simd::aarch64::neon::kernels(),
            #[cfg(target_arch = "aarch64")]
            Isa::Dotprod => crate::simd::aarch64::dotprod::kernels(),
            #[cfg(target_arch = "aarch64")]
            Isa::I8mm => crate::simd::aarch64::i8mm::kernels(),
            _ => None,
        }
    }

    /// Whether this CPU can run the instruction set's kernels.
    pub fn is_available(self) -> bool {
        self.kernels().is_some()
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The instruction sets this CPU can run, most portable first.
pub fn available() -> Vec<Isa> {
    Isa::ALL.into_iter().filter(|i| i.is_available()).collect()
}

/// The fastest instruction set this CPU can run ([`Isa::AvxvnniEvex`] is never chosen).
pub fn detect() -> Isa {
    [
        Isa::Avx512,
        Isa::Avxvnni,
        Isa::Avx2,
        Isa::I8mm,
        Isa::Dotprod,
        Isa::Neon,
    ]
    .into_iter()
    .find(|i| i.is_available())
    .unwrap_or(Isa::Scalar)
}

/// The instruction set named `name` (as [`Isa::name`], or `auto` for [`detect`]), if this CPU
/// can run it: an unknown name is [`KernelError::UnknownIsa`], a known one this CPU lacks is
/// [`KernelError::IsaUnavailable`].
pub fn select(name: &str) -> Result<Isa, KernelError> {
    if name.trim().eq_ignore_ascii_case("auto") {
        return Ok(detect());
    }
    let isa = Isa::from_name(name).ok_or_else(|| KernelError::UnknownIsa(name.to_string()))?;
    if isa.is_available() {
        Ok(isa)
    } else {
        Err(KernelError::IsaUnavailable {
            isa: isa.name(),
            available: available().iter().map(|i| i.name()).collect(),
        })
    }
}

/// What `CHATGLM_KERNELS` asks for: `None` when unset or empty, else [`select`] of its value.
pub fn requested() -> Result<Option<Isa>, KernelError> {
    match std::env::var(ENV_VAR) {
        Ok(v) if !v.trim().is_empty() => select(&v).map(Some),
        Ok(_) | Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(v)) => {
            Err(KernelError::UnknownIsa(v.to_string_lossy().into_owned()))
        }
    }
}

/// Overrides the x86 decode kernels' prefetch distance in bytes (0: none; default 3 KB);
/// read once, when the kernel table is chosen. For tuning on a new CPU (docs/DECODE_X86.md).
pub const PREFETCH_ENV_VAR: &str = "CHATGLM_PREFETCH";

/// Applies [`PREFETCH_ENV_VAR`] if it holds a byte count below 64 KiB (else ignored).
fn set_prefetch_from_env() {
    #[cfg(target_arch = "x86_64")]
    if let Some(d) = std::env::var(PREFETCH_ENV_VAR)
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&d| d < 1 << 16)
    {
        crate::simd::x86_64::avx2::PREFETCH_DISTANCE.store(d, std::sync::atomic::Ordering::Relaxed);
    }
}

static ACTIVE: OnceLock<&'static Kernels> = OnceLock::new();

/// The kernel table in use, fixed on first call: what `CHATGLM_KERNELS` asks for if that is
/// valid, else the fastest available ([`detect`]). An invalid `CHATGLM_KERNELS` falls back
/// silently here; a program that wants to report it calls [`requested`] first.
pub fn kernels() -> &'static Kernels {
    ACTIVE.get_or_init(|| {
        set_prefetch_from_env();
        let isa = requested().ok().flatten().unwrap_or_else(detect);
        isa.kernels().unwrap_or(&scalar::KERNELS)
    })
}

/// The instruction set in use (see [`kernels`]).
pub fn active() -> Isa {
    kernels().isa
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for isa in Isa::ALL {
            assert_eq!(Isa::from_name(isa.name()), Some(isa));
            assert_eq!(Isa::from_name(&isa.name().to_uppercase()), Some(isa));
        }
        assert_eq!(Isa::from_name("sse2"), None);
    }

    #[test]
    fn select_checks_the_cpu() {
        assert_eq!(select("scalar"), Ok(Isa::Scalar));
        assert_eq!(select(" Scalar "), Ok(Isa::Scalar));
        assert_eq!(select("auto"), Ok(detect()));
        assert_eq!(
            select("avx3"),
            Err(KernelError::UnknownIsa("avx3".to_string()))
        );
        for isa in Isa::ALL {
            match isa.kernels() {
                Some(k) => {
                    assert_eq!(k.isa, isa);
                    assert_eq!(select(isa.name()), Ok(isa));
                }
                None => assert!(matches!(
                    select(isa.name()),
                    Err(KernelError::IsaUnavailable { isa: name, .. }) if name == isa.name()
                )),
            }
        }
        // aarch64 paths do not exist on x86-64 (and vice versa).
        #[cfg(target_arch = "x86_64")]
        assert!(select("neon").is_err() && select("dotprod").is_err() && select("i8mm").is_err());
        #[cfg(target_arch = "aarch64")]
        assert!(select("avxvnni").is_err() && select("avxvnni-evex").is_err());
        assert!(available().contains(&Isa::Scalar));
        assert!(detect().is_available());
    }

    #[test]
    fn detection_follows_the_cpu() {
        #[cfg(target_arch = "aarch64")]
        {
            // NEON is part of the aarch64 baseline; dotprod is there from ARMv8.2 (optional).
            assert!(Isa::Neon.is_available());
            assert_eq!(
                Isa::Dotprod.is_available(),
                std::arch::is_aarch64_feature_detected!("dotprod")
            );
            // i8mm (ARMv8.6, optional from 8.2) comes with dotprod on every core that has it.
            assert_eq!(
                Isa::I8mm.is_available(),
                Isa::Dotprod.is_available() && std::arch::is_aarch64_feature_detected!("i8mm")
            );
            assert!(!Isa::Avx2.is_available() && !Isa::Avx512.is_available());
        }
        #[cfg(target_arch = "x86_64")]
        {
            let vnni = std::arch::is_x86_feature_detected!("avxvnni");
            let evex = std::arch::is_x86_feature_detected!("avx512vnni")
                && std::arch::is_x86_feature_detected!("avx512vl");
            let avx2 = Isa::Avx2.is_available();
            assert_eq!(Isa::Avxvnni.is_available(), avx2 && vnni);
            assert_eq!(Isa::AvxvnniEvex.is_available(), avx2 && evex);
            // The EVEX twin is for testing only; AVX-VNNI wins when AVX-512 is missing.
            assert_ne!(detect(), Isa::AvxvnniEvex);
            if !Isa::Avx512.is_available() && Isa::Avxvnni.is_available() {
                assert_eq!(detect(), Isa::Avxvnni);
            }
        }
        // CI states the fastest path it expects of the (emulated) CPU, e.g. `neon` under
        // `QEMU_CPU=cortex-a72`, `dotprod` under `QEMU_CPU=cortex-a76`, `i8mm` under `max`.
        if let Ok(want) = std::env::var("CHATGLM_EXPECT_ISA") {
            assert_eq!(detect().name(), want.trim(), "available: {:?}", available());
        }
    }

    #[test]
    fn active_is_available_and_stable() {
        let a = active();
        assert!(a.is_available());
        assert_eq!(active(), a);
        // If the test run forces a path, that is the one in use.
        if let Ok(Some(isa)) = requested() {
            assert_eq!(a, isa);
        }
    }
}
