//! Properties of the model itself, no mount needed: its merge agrees with an independent
//! squash of the same branches on disk, and its operations agree with a plain filesystem
//! (errno and resulting tree) while leaving a writable branch that squashes to the same view.

use proptest::prelude::*;
use union_tests::harness::{run_case, Fixture};
use union_tests::knobs::cases;
use union_tests::squash::squash;
use union_tests::strategy::{ops, stack};
use union_tests::view::View;

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(256), failure_persistence: None, max_shrink_iters: 512, ..ProptestConfig::default() })]

    #[test]
    fn merge_equals_squash(gen in stack()) {
        let model = gen.to_stack();
        let fx = Fixture::new(&model);
        let out = fx.scratch("squash");
        squash(&fx.branches, &out).unwrap();
        model.view().assert_matches(&View::snapshot(&out).unwrap(), "squash vs model merge");
    }

    #[test]
    fn model_ops_agree_with_plain_fs(gen in stack(), ops in ops(24)) {
        run_case(&gen, &ops, false);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(64), failure_persistence: None, max_shrink_iters: 512, ..ProptestConfig::default() })]

    /// layer-tool's squash of a generated stack shows the model's merged view (as far as a
    /// layer tar can carry it).
    #[test]
    fn layer_tool_squash_equals_merge(gen in stack()) {
        let model = gen.to_stack();
        let fx = Fixture::new(&model);
        let scratch = fx.scratch("lt");
        let out = union_tests::lt_squash::squash(&fx.branches, &scratch).unwrap();
        let got = View::snapshot(&out).unwrap();
        use union_tests::lt_squash::tar_visible;
        tar_visible(&model.view()).assert_matches(&tar_visible(&got), "layer-tool squash vs model merge");
    }
}
