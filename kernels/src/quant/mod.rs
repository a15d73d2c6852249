//! Block layouts and the scalar reference quantizers (the specification of each type).
