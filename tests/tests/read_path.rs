//! Read-path properties on a real mount, no writes through it: for generated stacks the
//! merged view equals the model's (property 1), read-only branches stay byte-for-byte the same
//! (3), a remount shows the same view (4), and the squashed branches show it too (5).

use proptest::prelude::*;
use union_tests::harness::Run;
use union_tests::knobs::cases;
use union_tests::mount::can_mount;
use union_tests::strategy::stack;

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(128), failure_persistence: None, max_shrink_iters: 512, ..ProptestConfig::default() })]

    #[test]
    fn merged_view_matches_model(gen in stack()) {
        if can_mount() {
            Run::new(&gen, true).finish();
        }
    }
}
