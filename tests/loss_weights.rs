//! BCE-with-logits with both per-class weights against torch
//! (`F.binary_cross_entropy_with_logits(x, t, weight=w, pos_weight=pw)`, values printed by torch
//! 2.15 for the inputs below).

use cxr::{ops, Tensor};

#[test]
fn weighted_bce_matches_torch() {
    let x = Tensor::from_vec(vec![0.3, -1.2, 2.5, -0.7, 0.1, -3.0], [2, 3]).unwrap().with_grad().unwrap();
    let t = Tensor::from_vec(vec![1.0, 0.0, 1.0, 0.0, 1.0, 0.0], [2, 3]).unwrap();
    let pw = Tensor::from_vec(vec![2.0, 0.5, 3.0], [3]).unwrap();
    let w = Tensor::from_vec(vec![0.2, 1.5, 0.7], [3]).unwrap();
    let loss = ops::bce_with_logits_weighted(&x, &t, Some(&pw), Some(&w)).unwrap();
    assert!((loss.to_scalar().unwrap() - 0.230_046_67).abs() < 1e-6);
    loss.backward().unwrap();
    let want = [-0.028_370_5, 0.057_868_8, -0.026_550_367, 0.011_060_408, -0.059_377_6, 0.005_533_018_6];
    for (g, w) in x.grad().unwrap().to_vec().unwrap().iter().zip(want) {
        assert!((g - w).abs() < 1e-6, "{g} vs torch {w}");
    }
}
