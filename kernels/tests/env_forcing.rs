//! `CHATGLM_KERNELS` forces the kernel path. This file holds a single test, so that setting
//! the variable cannot race with another test of the same process, and the process-wide
//! choice ([`isa::kernels`]) is made here first.

use chatglm_kernels::{isa, Isa, KernelError};

#[test]
fn the_environment_variable_forces_the_path() {
    // Unknown names and paths this CPU lacks are errors, not panics.
    std::env::set_var(isa::ENV_VAR, "avx3");
    assert_eq!(
        isa::requested(),
        Err(KernelError::UnknownIsa("avx3".to_string()))
    );
    #[cfg(target_arch = "x86_64")]
    {
        std::env::set_var(isa::ENV_VAR, "neon");
        assert!(matches!(
            isa::requested(),
            Err(KernelError::IsaUnavailable { isa: "neon", .. })
        ));
    }
    // The AVX-VNNI path is known by name on every machine, and refused where it cannot run.
    for name in ["avxvnni", "AVXVNNI-EVEX"] {
        std::env::set_var(isa::ENV_VAR, name);
        let isa = Isa::from_name(name).expect("a known path");
        if isa.is_available() {
            assert_eq!(isa::requested(), Ok(Some(isa)));
        } else {
            assert!(matches!(
                isa::requested(),
                Err(KernelError::IsaUnavailable { isa: n, .. }) if n == isa.name()
            ));
        }
    }
    std::env::set_var(isa::ENV_VAR, "");
    assert_eq!(isa::requested(), Ok(None));
    std::env::set_var(isa::ENV_VAR, "auto");
    assert_eq!(isa::requested(), Ok(Some(isa::detect())));

    // The most portable SIMD path this machine has (or scalar), forced, is the one in use.
    let forced = [Isa::Avx2, Isa::Neon]
        .into_iter()
        .find(|i| i.is_available())
        .unwrap_or(Isa::Scalar);
    std::env::set_var(isa::ENV_VAR, forced.name());
    assert_eq!(isa::requested(), Ok(Some(forced)));
    assert_eq!(isa::active(), forced);
    assert_eq!(isa::kernels().isa, forced);
    // Fixed once: changing the variable later changes nothing.
    std::env::set_var(isa::ENV_VAR, "scalar");
    assert_eq!(isa::active(), forced);
}
