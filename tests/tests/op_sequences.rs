//! Operation sequences on a real mount: after every step the merged view equals the model's
//! (property 1), the result equals the same operation's on a plain directory that started as
//! a copy of the merged view (2), read-only branches are untouched (3); at the end a remount
//! (4) and a squash of the branches (5) show the same view.

use proptest::prelude::*;
use union_tests::harness::run_case;
use union_tests::knobs::cases;
use union_tests::mount::can_mount;
use union_tests::strategy::{ops, stack};

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(64), failure_persistence: None, max_shrink_iters: 512, ..ProptestConfig::default() })]

    #[test]
    fn ops_match_model_and_plain_fs(gen in stack(), ops in ops(32)) {
        if can_mount() {
            run_case(&gen, &ops, true);
        }
    }
}
